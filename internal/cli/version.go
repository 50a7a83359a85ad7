package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/version"
)

// addVersion adds `heyvm version [--json]` and `heyvm --version`; both
// print the same lines, for bug reports.
func addVersion(root *cobra.Command, ios IO) {
	in := version.Get()
	root.Version = in.Version
	// The template is literal text: escape any "{{" a version might hold.
	root.SetVersionTemplate(strings.ReplaceAll(in.Text(), "{{", `{{"{{"}}`))
	var asJSON bool
	cmd := &cobra.Command{
		Use: "version", Short: "Show heyvm's version, commit, build date, Go version and OS/arch", Args: cobra.NoArgs,
		Annotations:       map[string]string{annLocal: "yes"},
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(c *cobra.Command, _ []string) error {
			if asJSON {
				return writeJSON(ios, in)
			}
			_, err := fmt.Fprint(ios.Out, in.Text())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	root.AddCommand(cmd)
}
