package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"
)

func newLogsCmd(ios IO) *cobra.Command {
	var follow, ownerLog bool
	cmd := &cobra.Command{
		Use: "logs ID", Short: "Show a sandbox's console log (or, with --owner, its owner log)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			_, sb, err := openSandbox(args[0])
			if err != nil {
				return err
			}
			path := sb.Files.ConsoleLog()
			if ownerLog {
				path = sb.Files.OwnerLog()
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt)
			defer stop()
			return tailFile(ctx, ios.Out, path, follow)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until Ctrl-C")
	cmd.Flags().BoolVar(&ownerLog, "owner", false, "show owner.log (the owner process's own log) instead")
	return cmd
}

// tailFile prints path, and with follow keeps printing what is appended,
// starting over when the log rotates.
func tailFile(ctx context.Context, w io.Writer, path string, follow bool) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		if !follow {
			return fmt.Errorf("no log yet at %s: the sandbox has not started", path)
		}
	} else if err != nil {
		return err
	}
	for {
		if f != nil {
			if _, err := io.Copy(w, f); err != nil {
				return err
			}
		}
		if !follow {
			if f != nil {
				f.Close()
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if f != nil {
				f.Close()
			}
			return nil
		case <-time.After(100 * time.Millisecond):
		}
		// Rotated or recreated? Reopen from the start of the new file.
		if fi, err := os.Stat(path); err == nil && (f == nil || !sameFile(f, fi)) {
			if f != nil {
				io.Copy(w, f)
				f.Close()
			}
			f, _ = os.Open(path)
		}
	}
}

func sameFile(f *os.File, fi os.FileInfo) bool {
	cur, err := f.Stat()
	return err == nil && os.SameFile(cur, fi)
}
