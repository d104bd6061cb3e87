package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// proc is one long-running process the cluster started: a daemon entered
// into its namespaces by nsenter (which execs it, so the PID is the
// daemon's own).
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once reaped
	err     error         // Wait's result, valid after done
}

// startProc starts argv with stdout and stderr appended to logPath. The
// process gets its own session (a Ctrl-C on the terminal reaches only the
// test, which then stops everything in order) and is killed by the kernel
// if the test process dies (Pdeathsig fires when the creating thread exits,
// so that goroutine keeps its thread locked until the process is reaped).
func startProc(name, logPath string, env []string, argv ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer f.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, strings.Join(argv, " "), err)
	}
	return p, nil
}

// PID is the process id.
func (p *proc) PID() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs. A process that had
// already ended is not an error; one that needed SIGKILL is only logged by
// the caller (kubelet and containerd may take long to stop).
func (p *proc) stop(grace time.Duration) (killed bool, err error) {
	if done, _ := p.exited(); done {
		return false, nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return false, fmt.Errorf("signal %s (pid %d): %w", p.name, p.PID(), err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return false, nil
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return true, nil
}

// logTail returns the last n lines of the process log.
func (p *proc) logTail(n int) string { return tailFile(p.logPath, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runCmd runs argv to completion and returns its combined output, wrapping
// a failure with the command and the output.
func runCmd(ctx context.Context, env []string, stdin string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// outputCmd runs argv to completion and returns its stdout; stderr goes
// into the error only.
func outputCmd(ctx context.Context, env []string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// cleanEnv is the test's environment without the variables that would
// change what the daemons do (WEFT_*, ETCD_*, KUBECONFIG, CONTAINERD_*),
// with binDir first in PATH: containerd finds its shim through PATH.
func cleanEnv(binDir string) []string {
	env := []string{"CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1"}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "WEFT_"), strings.HasPrefix(k, "ETCD_"), strings.HasPrefix(k, "CONTAINERD_"),
			k == "KUBECONFIG", k == "NOTIFY_SOCKET":
			continue
		case k == "PATH":
			path = v
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+binDir+":"+path)
}
