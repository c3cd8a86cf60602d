package s2stest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every Net stops its servers, streams and DNS when its test ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
