package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/heyvm/heyvm/internal/sandbox"
)

// ConsoleEscape detaches from `heyvm console` (Ctrl-], as in telnet and
// virsh).
const ConsoleEscape = 0x1d

func newConsoleCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use:   "console ID",
		Short: "Attach to a sandbox's serial console (a root shell; Ctrl-] detaches)",
		Long: "console attaches your terminal to the guest console, where init keeps a root shell.\n" +
			"It works when SSH does not, which makes it the recovery path. Press Ctrl-] to detach;\n" +
			"the VM keeps running.",
		Args:        cobra.ExactArgs(1),
		Annotations: map[string]string{annTTY: "yes"},
		RunE: func(c *cobra.Command, args []string) error {
			_, sb, err := openSandbox(args[0])
			if err != nil {
				return err
			}
			return RunConsole(c.Context(), ios, sb)
		},
	}
}

// RunConsole attaches to the console socket the owner serves.
func RunConsole(ctx context.Context, ios IO, sb *sandbox.Sandbox) error {
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return err
	}
	if st.Status != sandbox.Running {
		return fmt.Errorf("sandbox %s is %s: start it with `heyvm start %s`; its past console output is in `heyvm logs %s`", sb.Config.Name, st.Status, sb.Config.Name, sb.Config.Name)
	}
	conn, err := net.Dial("unix", sb.Files.ConsoleSock())
	if err != nil {
		return fmt.Errorf("attach to the console of %s: %w", sb.Config.Name, err)
	}
	defer conn.Close()
	if f, ok := ios.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return err
		}
		defer term.Restore(int(f.Fd()), old)
	}
	fmt.Fprintf(ios.ErrOut, "Connected to the console of %s. Press Ctrl-] to detach.\r\n", sb.Config.Name)
	conn.Write([]byte("\r")) // show a fresh prompt
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(ios.Out, conn)
		done <- err
	}()
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := ios.In.Read(buf)
			if n > 0 {
				if i := bytes.IndexByte(buf[:n], ConsoleEscape); i >= 0 {
					conn.Write(buf[:i])
					done <- nil
					return
				}
				if _, werr := conn.Write(buf[:n]); werr != nil {
					done <- werr
					return
				}
			}
			if err != nil {
				// End of input (not a terminal): let the output settle.
				time.Sleep(200 * time.Millisecond)
				done <- nil
				return
			}
		}
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	fmt.Fprintf(ios.ErrOut, "\r\nDetached from the console of %s.\r\n", sb.Config.Name)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
