package prosodytest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// probeTimeout bounds the check that Prosody's Lua can load lua-unbound.
const probeTimeout = 10 * time.Second

// Available reports whether Prosody and lua-unbound are installed, with an
// error wrapping [ErrNotInstalled] saying what is missing. lua-unbound is
// required because without it Prosody resolves through /etc/resolv.conf,
// which tests must never use.
func Available() error {
	bin, err := exec.LookPath("prosody")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	interp, err := luaInterpreter(bin)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, interp, "-e", `require "lunbound"`).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s cannot load lunbound (package lua-unbound): %v: %s", ErrNotInstalled, interp, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// luaInterpreter returns the interpreter named on the prosody script's
// "#!/usr/bin/env lua5.4" line, so the lua-unbound probe uses the same Lua.
func luaInterpreter(bin string) (string, error) {
	f, err := os.Open(bin)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "#!") {
		return "", fmt.Errorf("%s is not a Lua script (no #! line)", bin)
	}
	fields := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(fields) == 0 {
		return "", fmt.Errorf("%s has an empty #! line", bin)
	}
	interp := fields[len(fields)-1] // "/usr/bin/env lua5.4" or "/usr/bin/lua5.4"
	if p, err := exec.LookPath(interp); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("the Lua interpreter %q of %s is not installed", interp, bin)
}

// Require skips the test when Prosody is not installed, except when the
// environment variable CI is "true": interop tests must run in CI, so there
// it fails the test instead.
func Require(tb testing.TB) {
	tb.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("prosodytest: %v; CI must run the Prosody interop tests (scripts/test installs them)", err)
		return
	}
	tb.Skipf("prosodytest: %v", err)
}
