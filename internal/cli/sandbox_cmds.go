package cli

import "github.com/spf13/cobra"

func addSandboxCommands(root *cobra.Command, ios IO) {}
