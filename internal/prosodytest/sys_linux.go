package prosodytest

import "syscall"

// sysProcAttr kills Prosody if the test binary dies without cleaning up
// (a panic, a -timeout), so no stray server holds loopback ports.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
