package mount

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemonEnv marks a process started by Daemonize; its value is the number of the file
// descriptor to report readiness on.
const daemonEnv = "IMGFS_MOUNT_DAEMON"

// Daemonize starts this program again with args, which must make it mount and serve in
// the foreground, as a daemon: in a session of its own, stdin from /dev/null, stdout and
// stderr appended to logf (see OpenLog). It returns the daemon's pid once the daemon calls
// Ready(nil), or the error the daemon reported, or what its log says if it died without a
// word, or a timeout error (the daemon is then killed).
func Daemonize(args []string, logf *os.File, timeout time.Duration) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	logPath := logf.Name()
	start, _ := logf.Seek(0, io.SeekEnd)
	null, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()

	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), daemonEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, logf, logf
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("starting the daemon: %w", err)
	}
	pid := cmd.Process.Pid
	// The daemon outlives us: let the process be reaped by init once we exit.
	defer cmd.Process.Release()

	r.SetReadDeadline(time.Now().Add(timeout))
	msg, rerr := io.ReadAll(r)
	switch {
	case errors.Is(rerr, os.ErrDeadlineExceeded):
		cmd.Process.Kill()
		return 0, fmt.Errorf("the daemon did not get the mount ready in %v (log: %s)", timeout, logPath)
	case rerr != nil:
		return 0, rerr
	}
	text := strings.TrimSpace(string(msg))
	if text == "ok" {
		return pid, nil
	}
	if e, ok := strings.CutPrefix(text, "error: "); ok {
		return 0, errors.New(e)
	}
	// It died before saying anything: its log says why.
	if tail := logTail(logf, start); tail != "" {
		return 0, fmt.Errorf("the daemon exited: %s", tail)
	}
	return 0, fmt.Errorf("the daemon exited without a word (log: %s)", logPath)
}

// logTail returns the last line the daemon wrote to its log past offset start.
func logTail(logf *os.File, start int64) string {
	data, err := io.ReadAll(io.NewSectionReader(logf, start, 1<<20))
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	return string(lines[len(lines)-1])
}

// Ready tells the process that started this one with Daemonize that the mount serves
// (err == nil), or why it could not be made. It does nothing in a process not started so,
// and only the first call counts.
func Ready(err error) {
	v := os.Getenv(daemonEnv)
	if v == "" {
		return
	}
	os.Unsetenv(daemonEnv)
	fd, perr := strconv.Atoi(v)
	if perr != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	defer f.Close()
	if err != nil {
		fmt.Fprintf(f, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	fmt.Fprintln(f, "ok")
}
