package srv

import (
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// drawSeq returns a draw function that replays draws and fails the test if
// more are consumed; the returned check verifies all were consumed.
func drawSeq(t *testing.T, draws ...int) (draw func(int) int, check func()) {
	t.Helper()
	i := 0
	draw = func(n int) int {
		require.Less(t, i, len(draws), "more draws consumed than the vector has (n=%d)", n)
		d := draws[i]
		i++
		require.LessOrEqual(t, d, n, "vector draw out of [0,%d]", n)
		return d
	}
	check = func() { assert.Equal(t, len(draws), i, "draws consumed") }
	return draw, check
}

// spec31 are the records of srv.md §3.1 in input order.
var spec31 = []Record{
	{Priority: 10, Weight: 60, Port: 5269, Target: "a.example.net."},
	{Priority: 10, Weight: 30, Port: 5269, Target: "b.example.net."},
	{Priority: 10, Weight: 10, Port: 5269, Target: "c.example.net."},
	{Priority: 10, Weight: 0, Port: 5269, Target: "z.example.net."},
	{Priority: 20, Weight: 0, Port: 5269, Target: "backup.example.net."},
	{Priority: 5, Weight: 0, Port: 5270, Target: "primary.example.net."},
}

func hostPorts(ts []Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.String()
	}
	return out
}

type orderCase struct {
	name    string
	records []Record
	draws   []int
	want    []string
}

func TestOrderSpecVectors(t *testing.T) {
	tests := []orderCase{
		{
			name: "3.1 draws 75,0,50", records: spec31, draws: []int{75, 0, 50},
			want: []string{"primary.example.net:5270", "b.example.net:5269", "z.example.net:5269", "a.example.net:5269", "c.example.net:5269", "backup.example.net:5269"},
		},
		{
			name: "3.1 draws 100,60,0", records: spec31, draws: []int{100, 60, 0},
			want: []string{"primary.example.net:5270", "c.example.net:5269", "a.example.net:5269", "z.example.net:5269", "b.example.net:5269", "backup.example.net:5269"},
		},
		{
			name: "3.1 draws 1,31,0", records: spec31, draws: []int{1, 31, 0},
			want: []string{"primary.example.net:5270", "a.example.net:5269", "c.example.net:5269", "z.example.net:5269", "b.example.net:5269", "backup.example.net:5269"},
		},
		{
			name: "all-zero group keeps input order",
			records: []Record{
				{Target: "one", Port: 1}, {Target: "two", Port: 2}, {Target: "three", Port: 3},
			},
			draws: []int{0, 0},
			want:  []string{"one:1", "two:2", "three:3"},
		},
	}
	merge := []Record{
		{Priority: 10, Weight: 50, Port: 443, Target: "tls.example.org.", DirectTLS: true},
		{Priority: 10, Weight: 50, Port: 5269, Target: "plain.example.org."},
	}
	tlsFirst := []string{"tls.example.org:443 (direct TLS)", "plain.example.org:5269"}
	plainFirst := []string{"plain.example.org:5269", "tls.example.org:443 (direct TLS)"}
	for _, d := range []int{0, 50} {
		tests = append(tests, orderCase{name: "XEP-0368 merge draw " + strconv.Itoa(d), records: merge, draws: []int{d}, want: tlsFirst})
	}
	for _, d := range []int{51, 100} {
		tests = append(tests, orderCase{name: "XEP-0368 merge draw " + strconv.Itoa(d), records: merge, draws: []int{d}, want: plainFirst})
	}
	tests = append(tests, struct {
		name    string
		records []Record
		draws   []int
		want    []string
	}{
		name: "priority merge needs no draws",
		records: []Record{
			{Priority: 5, Weight: 0, Port: 5270, Target: "xmpp.example.org.", DirectTLS: true},
			{Priority: 10, Weight: 0, Port: 5269, Target: "xmpp.example.org."},
		},
		want: []string{"xmpp.example.org:5270 (direct TLS)", "xmpp.example.org:5269"},
	})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.records)
			draw, check := drawSeq(t, tt.draws...)
			got := Order(tt.records, draw)
			check()
			assert.Equal(t, tt.want, hostPorts(got))
			assert.Equal(t, in, tt.records, "input must not be modified")
		})
	}
}

func TestOrderEdgeCases(t *testing.T) {
	assert.Nil(t, Order(nil, nil))

	// Out-of-range draws are clamped instead of misbehaving.
	two := []Record{{Weight: 1, Target: "a"}, {Weight: 1, Target: "b"}}
	assert.Equal(t, []string{"b:0"}, hostPorts(Order(two, func(int) int { return 1 << 20 }))[:1])
	assert.Equal(t, []string{"a:0"}, hostPorts(Order(two, func(int) int { return -5 }))[:1])

	// The default draw yields a permutation that respects priorities.
	for range 100 {
		got := Order(spec31, nil)
		require.Len(t, got, len(spec31))
		assert.Equal(t, "primary.example.net", got[0].Host)
		assert.Equal(t, "backup.example.net", got[5].Host)
		hosts := make([]string, 0, 4)
		for _, tg := range got[1:5] {
			hosts = append(hosts, tg.Host)
		}
		assert.ElementsMatch(t, []string{"a.example.net", "b.example.net", "c.example.net", "z.example.net"}, hosts)
	}

	// More records than the stack buffer holds.
	many := make([]Record, 40)
	for i := range many {
		many[i] = Record{Priority: uint16(i % 3), Weight: uint16(i), Port: uint16(i), Target: "h"}
	}
	got := Order(many, nil)
	require.Len(t, got, 40)
	assert.True(t, slices.IsSortedFunc(got, func(a, b Target) int {
		return int(many[a.Port].Priority) - int(many[b.Port].Priority)
	}))
}

func TestOrderWeightDistribution(t *testing.T) {
	// With weights 60/30/10 the first pick must follow them; sweep every
	// draw value so the check is exact, not statistical.
	recs := spec31[:3]
	first := map[string]int{}
	for d := 0; d <= 100; d++ {
		got := Order(recs, func(n int) int {
			if n == 100 {
				return d
			}
			return 0
		})
		first[got[0].Host]++
	}
	assert.Equal(t, map[string]int{"a.example.net": 61, "b.example.net": 30, "c.example.net": 10}, first)
}

func BenchmarkOrder(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = Order(spec31, nil)
	}
}
