package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// proc is one long-running process started inside a namespace by the lab.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has been reaped
	err     error         // Wait's result, valid after done
}

// startProc runs `ip netns exec nsName argv...` (ip execs argv, so the PID is
// the program's own), with stdout and stderr appended to logPath. Unless keep
// is set the kernel kills the process when the lab's process dies: Pdeathsig
// fires when the creating *thread* exits, so the starting goroutine keeps its
// thread locked until the process has been reaped.
func startProc(name, nsName, logPath string, keep bool, argv ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", nsName}, argv...)...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group: a Ctrl-C on the terminal reaches the lab, which then
	// stops its processes in order, instead of reaching every process at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !keep {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
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

// cleanEnv is the lab's environment without WEFT_* and ETCD_* variables, so a
// developer's shell cannot change the flags the lab passes.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WEFT_") || strings.HasPrefix(kv, "ETCD_") {
			continue
		}
		env = append(env, kv)
	}
	return env
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
// already ended is not an error; one that needed SIGKILL is.
func (p *proc) stop(grace time.Duration) error {
	if done, _ := p.exited(); done {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s (pid %d): %w", p.name, p.PID(), err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %s and was killed", p.name, p.PID(), grace)
}

// logTail returns the last n lines of the process log.
func (p *proc) logTail(n int) string {
	return tailFile(p.logPath, n)
}

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
