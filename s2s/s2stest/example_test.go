package s2stest_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xmppfed/xmppfed/s2s/s2stest"
)

// Two federated domains in a test: a.example's Pool sets up an
// authenticated stream (TLS and SASL EXTERNAL with certificates from the
// Net's CA) on the first Send, and b.example's Server delivers the message
// to its Inbox.
func ExampleNew() {
	t := &standIn{} // in a test: the *testing.T
	defer t.finish()

	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{})
	b := n.AddDomain("b.example", s2stest.Options{})
	if err := a.Send(context.Background(), a.Message("alice@a.example", "bob@b.example", "hi")); err != nil {
		panic(err)
	}
	st := b.Inbox.Next(t, 10*time.Second)
	fmt.Println(st.From, "→", st.To)

	for _, i := range a.Server.Status() {
		fmt.Println(i.Direction, i.Local, i.Remote, i.State, i.Auth, i.TLSVersionName())
	}
	// Output:
	// alice@a.example → bob@b.example
	// outbound a.example b.example CONNECTED sasl-external TLS 1.3
}

// standIn plays the part of a *testing.T where there is none (an Example)
// and records what a helper does with its test. It implements what the
// s2stest helpers call; any other method panics (nil testing.TB).
type standIn struct {
	testing.TB

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	logs     []string
}

func (s *standIn) Helper() {}

func (s *standIn) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

func (s *standIn) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *standIn) Logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs = append(s.logs, fmt.Sprintf(format, args...))
}

// Fatalf marks the test failed and stops the caller with a panic carrying
// the message (a real test's goroutine would exit).
func (s *standIn) Fatalf(format string, args ...any) {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	panic(fatal(fmt.Sprintf(format, args...)))
}

type fatal string

// finish runs the cleanups, last registered first, as the testing package
// does when a test ends.
func (s *standIn) finish() {
	s.mu.Lock()
	cs := slices.Clone(s.cleanups)
	s.cleanups = nil
	s.mu.Unlock()
	for _, f := range slices.Backward(cs) {
		f()
	}
}

// fatalOf runs f and returns the message it failed its test with, or "".
func fatalOf(f func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			m, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			msg = string(m)
		}
	}()
	f()
	return ""
}
