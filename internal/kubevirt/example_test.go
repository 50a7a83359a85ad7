package kubevirt_test

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/console"
	"github.com/heyvm/heyvm/internal/kubevirt"
)

// The life of a sandbox on a KubeVirt context, as the CLI would drive it.
// (Compiled, not run: it needs a cluster.)
func Example() {
	ctx := context.Background()
	c, err := kubevirt.New(kubevirt.Config{Kubeconfig: "", Context: "", Namespace: "dev"})
	if err != nil {
		fmt.Println(err) // one line with the fix, e.g. no kubeconfig
		return
	}
	if err := c.Check(ctx, true); err != nil {
		fmt.Println(err) // KubeVirt or CDI missing, RBAC
		return
	}
	set, err := kubevirt.Objects(kubevirt.Options{
		ID: "0123456789ab", Name: "demo", Image: "debian:12",
		ImageRef: "ghcr.io/acme/heyvm-debian@sha256:...", // from containerdisk.Push
		Arch:     "amd64", KernelCmdline: "console=hvc0 root=/dev/vda rw quiet panic=-1",
		CPUs: 2, MemoryMiB: 2048, RootfsSize: 4 << 30, Running: true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := c.Create(ctx, set); err != nil {
		fmt.Println(err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // a first import takes a while
	defer cancel()
	if _, err := c.Wait(wctx, "demo", 2*time.Second, func(s *kubevirt.Sandbox) bool { return s.Phase == "Running" }); err != nil {
		fmt.Println(err) // unschedulable (which condition), image pull, disk import
		return
	}

	// Provisioning over the serial console, as on the local backends.
	con, err := c.Console(wctx, "demo")
	if err != nil {
		fmt.Println(err)
		return
	}
	d := console.New(con, nil)
	if _, err := d.WaitReady(wctx); err != nil {
		fmt.Println(err)
		return
	}
	// ... d.Run(provisioning script) installs the key, prints the host key.
	con.Close()

	// SSH over the portforward subresource.
	conn, err := c.PortForward(ctx, "demo", 22)
	if err != nil {
		fmt.Println(err)
		return
	}
	var cfg ssh.ClientConfig // user, key and the pinned host key from provisioning
	cc, chans, reqs, err := ssh.NewClientConn(conn, "demo", &cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	client := ssh.NewClient(cc, chans, reqs)
	defer client.Close()
}
