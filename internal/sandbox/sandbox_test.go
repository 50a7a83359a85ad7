package sandbox

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
)

func testStore(t *testing.T) Store {
	return Store{Root: layout.Root{Dir: t.TempDir()}}
}

func create(t *testing.T, s Store, name string) *Sandbox {
	t.Helper()
	sb, err := s.Create(context.Background(), &Config{Name: name, Image: "debian:12", Backend: "qemu", CPUs: 1, MemoryMiB: 256}, func(p string) error {
		return os.WriteFile(p, []byte("disk"), 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

func TestValidateAndSanitizeName(t *testing.T) {
	for _, n := range []string{"a", "my-box-1", "x9"} {
		if err := ValidateName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", "-a", "a-", "A", "a_b", "a.b", "a b", strings.Repeat("a", 64), "a/b"} {
		if ValidateName(n) == nil {
			t.Errorf("%q accepted", n)
		}
	}
	for in, want := range map[string]string{"My Repo/feat/x": "my-repo-feat-x", "--": "sandbox", "a__b": "a-b"} {
		if got := SanitizeName(in); got != want || ValidateName(got) != nil {
			t.Errorf("SanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigRoundTrip(t *testing.T) {
	s := testStore(t)
	sb := create(t, s, "box")
	sb.Config.TTL = Duration(90 * time.Minute)
	sb.Config.Env = []string{"A=1"}
	if err := WriteConfig(sb.Files.Config(), sb.Config); err != nil {
		t.Fatal(err)
	}
	c, err := ReadConfig(sb.Files.Config())
	if err != nil {
		t.Fatal(err)
	}
	if c.TTL != Duration(90*time.Minute) || c.Name != "box" || c.Env[0] != "A=1" || c.ID != sb.Config.ID {
		t.Fatalf("round trip: %+v", c)
	}
	fi, _ := os.Stat(sb.Files.Config())
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("sandbox.yaml mode %v", fi.Mode())
	}
}

func TestLookup(t *testing.T) {
	s := testStore(t)
	a := create(t, s, "alpha")
	b := create(t, s, "beta")
	if got, err := s.Lookup("alpha"); err != nil || got.Config.ID != a.Config.ID {
		t.Fatal("by name", err)
	}
	if got, err := s.Lookup(b.Config.ID); err != nil || got.Config.Name != "beta" {
		t.Fatal("by id", err)
	}
	if got, err := s.Lookup(b.Config.ID[:8]); err != nil || got.Config.Name != "beta" {
		t.Fatal("by prefix", err)
	}
	if _, err := s.Lookup("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal("unknown", err)
	}
	// Force an ambiguous prefix.
	c := create(t, s, "gamma")
	os.Rename(c.Files.Dir, s.Root.Sandbox(a.Config.ID[:4]+"ffffffff").Dir)
	c.Config.ID = a.Config.ID[:4] + "ffffffff"
	WriteConfig(s.Root.Sandbox(c.Config.ID).Config(), c.Config)
	if _, err := s.Lookup(a.Config.ID[:4]); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("ambiguous: %v", err)
	}
}

func TestCorruptConfigDoesNotHideOthers(t *testing.T) {
	s := testStore(t)
	good := create(t, s, "good")
	bad := create(t, s, "bad")
	b, _ := os.ReadFile(bad.Files.Config())
	os.WriteFile(bad.Files.Config(), b[:10], 0o600) // truncated
	all, broken, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Config.ID != good.Config.ID {
		t.Fatalf("good sandbox not listed: %v", all)
	}
	if len(broken) != 1 || !strings.Contains(broken[0].Err.Error(), bad.Files.Config()) {
		t.Fatalf("broken not reported with its file: %+v", broken)
	}
	if _, err := s.Lookup(bad.Config.ID); err == nil || !strings.Contains(err.Error(), "sandbox.yaml") {
		t.Fatalf("lookup of broken: %v", err)
	}
}

func TestCreateIsAtomicAndNamesUnique(t *testing.T) {
	s := testStore(t)
	_, err := s.Create(context.Background(), &Config{Name: "x", Image: "i", Backend: "qemu"}, func(string) error {
		return errors.New("disk full")
	})
	if err == nil {
		t.Fatal("failure not reported")
	}
	if des, _ := os.ReadDir(s.Root.SandboxesDir()); len(des) != 1 || des[0].Name() != ".store.lock" {
		t.Fatalf("half sandbox left: %v", des)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Create(context.Background(), &Config{Name: "same", Image: "i", Backend: "qemu"}, func(p string) error {
				return os.WriteFile(p, nil, 0o600)
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		if err == nil {
			ok++
		} else if !strings.Contains(err.Error(), "already exists") {
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d creates of the same name succeeded", ok)
	}
}

func TestStateFollowsTheLockNotTheFile(t *testing.T) {
	s := testStore(t)
	sb := create(t, s, "box")
	st, err := ReadState(sb.Files)
	if err != nil || st.Status != Stopped {
		t.Fatalf("new sandbox: %+v %v", st, err)
	}
	lock, err := fsutil.TryLock(sb.Files.OwnerLock())
	if err != nil {
		t.Fatal(err)
	}
	lock.WriteOwnerPID(os.Getpid())
	if st, _ := ReadState(sb.Files); st.Status != Starting {
		t.Fatalf("locked without owner.json: %v", st.Status)
	}
	WriteOwnerInfo(sb.Files, OwnerInfo{PID: os.Getpid(), SSHHost: "127.0.0.1", SSHPort: 2222, StartedAt: time.Now()})
	if st, _ := ReadState(sb.Files); st.Status != Running || st.Owner.SSHPort != 2222 {
		t.Fatalf("running: %+v", st)
	}
	if held, pid, _ := fsutil.HolderPID(sb.Files.OwnerLock()); !held || pid != os.Getpid() {
		t.Fatalf("holder: %v %d", held, pid)
	}
	// The owner dies without cleaning up: its lock goes, owner.json stays.
	lock.Unlock()
	st, _ = ReadState(sb.Files)
	if st.Status != Stopped || st.LastStop == nil || st.LastStop.Reason != StopCrashed {
		t.Fatalf("after owner death: %+v", st)
	}
	if _, err := os.Stat(sb.Files.OwnerState()); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("stale owner.json not removed")
	}
}

func TestLockWaits(t *testing.T) {
	p := t.TempDir() + "/l"
	l, err := fsutil.TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsutil.TryLock(p); !errors.Is(err, fsutil.ErrLocked) {
		t.Fatal("second TryLock succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := fsutil.LockContext(ctx, p); err == nil {
		t.Fatal("LockContext should time out")
	}
	go func() { time.Sleep(20 * time.Millisecond); l.Unlock() }()
	start := time.Now()
	if err := fsutil.WaitUnlocked(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("wait did not wake on release")
	}
	l2, err := fsutil.LockContext(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	l2.Unlock()
}

func TestPauseRecord(t *testing.T) {
	files := layout.Sandbox{Dir: t.TempDir()}
	if ReadPause(files) != nil {
		t.Fatal("a missing record reads as paused")
	}
	if err := ReservePause(files); err != nil {
		t.Fatal(err)
	}
	if ReadPause(files) != nil {
		t.Fatal("a fresh record reads as paused")
	}
	p := &PauseInfo{Reason: "host disk full: 3 MB free on /mnt", NoSpace: true}
	if err := WritePause(files, p); err != nil {
		t.Fatal(err)
	}
	if got := ReadPause(files); got == nil || got.Reason != p.Reason || !got.NoSpace {
		t.Fatalf("read back %+v", got)
	}
	fi, _ := os.Stat(files.PauseState())
	if fi.Size() != pauseRecordSize {
		t.Fatalf("record is %d bytes, want it fixed at %d", fi.Size(), pauseRecordSize)
	}
	WritePause(files, nil)
	if ReadPause(files) != nil {
		t.Fatal("a cleared record reads as paused")
	}
	// A torn record reads as not paused rather than failing.
	os.WriteFile(files.PauseState(), []byte(`{"reason":"host di`), 0o600)
	if ReadPause(files) != nil {
		t.Fatal("a torn record reads as paused")
	}
}

// A saved VM makes a sandbox without an owner "suspended"; a record whose
// state file is missing or of another size is reported, not trusted; and
// the marker goes before the state when it is discarded.
func TestSuspendRecord(t *testing.T) {
	files := layout.Sandbox{Dir: t.TempDir()}
	st, err := ReadState(files)
	if err != nil || st.Status != Stopped || st.Suspend != nil {
		t.Fatalf("fresh: %+v %v", st, err)
	}
	if si, err := ReadSuspendInfo(files); si != nil || err != nil {
		t.Fatalf("no record: %v %v", si, err)
	}
	if err := os.WriteFile(files.SuspendState(), make([]byte, 1234), 0o600); err != nil {
		t.Fatal(err)
	}
	want := SuspendInfo{Hypervisor: "QEMU 7.2.19", StateBytes: 1234, GuestIP: "10.0.2.15", CPUs: 2, MemoryMiB: 512}
	if err := WriteSuspendInfo(files, want); err != nil {
		t.Fatal(err)
	}
	st, err = ReadState(files)
	if err != nil || st.Status != Suspended || st.Suspend == nil || *st.Suspend != want {
		t.Fatalf("suspended: %+v %v", st, err)
	}
	// Truncated state: still suspended (start explains), but not usable.
	os.Truncate(files.SuspendState(), 1000)
	if _, err := ReadSuspendInfo(files); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("truncated state accepted: %v", err)
	}
	if st, _ := ReadState(files); st.Status != Suspended || st.Suspend != nil {
		t.Fatalf("truncated: %+v", st)
	}
	os.WriteFile(files.SuspendTemp(), []byte("half"), 0o600)
	if err := DiscardSuspend(files); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{files.SuspendInfo(), files.SuspendState(), files.SuspendTemp()} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after discard", p)
		}
	}
	if st, _ := ReadState(files); st.Status != Stopped {
		t.Fatalf("after discard: %+v", st)
	}
	if err := DiscardSuspend(files); err != nil {
		t.Fatalf("discard is not idempotent: %v", err)
	}
}

// A name must not shadow another sandbox's id, nor a new id a name.
func TestNamesAndIDsDoNotShadow(t *testing.T) {
	s := testStore(t)
	first := create(t, s, "box")
	for _, name := range []string{first.Config.ID, first.Config.ID[:4]} {
		_, err := s.Create(context.Background(), &Config{Name: name, Image: "i", Backend: "qemu"}, func(p string) error { return os.WriteFile(p, nil, 0o600) })
		if err == nil || !strings.Contains(err.Error(), "would shadow it") {
			t.Errorf("name %q: %v", name, err)
		}
	}
	// A generated name is "sb-" and the id's start.
	sb, err := s.Create(context.Background(), &Config{Image: "i", Backend: "qemu"}, func(p string) error { return os.WriteFile(p, nil, 0o600) })
	if err != nil || sb.Config.Name != "sb-"+sb.Config.ID[:6] {
		t.Fatalf("generated name: %+v %v", sb, err)
	}
	// New ids never begin with an existing name: with sandboxes named
	// "a" to "e", every id made starts with 0-9 or f.
	var all []*Sandbox
	named := func(names ...string) {
		for _, n := range names {
			all = append(all, &Sandbox{Config: &Config{Name: n, ID: "ffffffffff" + n}})
		}
	}
	named("a", "b", "c", "d", "e")
	for i := 0; i < 200; i++ {
		if id := newUnshadowedID(all); strings.IndexByte("abcde", id[0]) >= 0 {
			t.Fatalf("id %s begins with a sandbox's name", id)
		}
	}
	// Names of every hex digit leave no unshadowed start: an id is still made.
	named("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "f")
	if id := newUnshadowedID(all); len(id) != 12 {
		t.Fatalf("id %q", id)
	}
}

// A live owner's damaged owner.json: the owner is asked to write it
// again; if it cannot, the sandbox is running with the damage named.
func TestDamagedOwnerFile(t *testing.T) {
	s := testStore(t)
	sb := create(t, s, "box")
	lock, err := fsutil.TryLock(sb.Files.OwnerLock())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	lock.WriteOwnerPID(os.Getpid())
	os.WriteFile(sb.Files.OwnerState(), []byte("{garbage"), 0o600)
	defer func() { RewriteOwnerInfo = nil }()
	RewriteOwnerInfo = nil
	st, err := ReadState(sb.Files)
	if err != nil || st.Status != Running || st.Owner != nil || !strings.Contains(st.OwnerDamaged, "owner.json is damaged") {
		t.Fatalf("no owner to ask: %+v %v", st, err)
	}
	asked := 0
	RewriteOwnerInfo = func(files layout.Sandbox) error {
		asked++
		return WriteOwnerInfo(files, OwnerInfo{PID: os.Getpid(), SSHHost: "127.0.0.1", SSHPort: 2222})
	}
	st, err = ReadState(sb.Files)
	if err != nil || asked != 1 || st.Status != Running || st.Owner == nil || st.Owner.SSHPort != 2222 || st.OwnerDamaged != "" {
		t.Fatalf("owner rewrote it: %+v %v (asked %d)", st, err, asked)
	}
}

// Removed sandboxes' MACs go to a small pool that new ones take from.
func TestMACPool(t *testing.T) {
	s := testStore(t)
	a := create(t, s, "m-a")
	b := create(t, s, "m-b")
	if a.Config.MAC == "" || a.Config.MAC == b.Config.MAC {
		t.Fatalf("MACs: %q %q", a.Config.MAC, b.Config.MAC)
	}
	if err := s.Remove(context.Background(), a.Config.ID); err != nil {
		t.Fatal(err)
	}
	c := create(t, s, "m-c")
	if c.Config.MAC != a.Config.MAC {
		t.Errorf("a new sandbox got %s, not the removed one's %s", c.Config.MAC, a.Config.MAC)
	}
	d := create(t, s, "m-d") // the pool is empty again: a new MAC
	if d.Config.MAC == a.Config.MAC || d.Config.MAC == b.Config.MAC {
		t.Errorf("a MAC in use was given again: %s", d.Config.MAC)
	}
	// The pool never hands out a MAC a sandbox still has, and stays small.
	for i := 0; i < macPoolSize+10; i++ {
		s.giveMAC(NewMAC())
	}
	s.giveMAC(b.Config.MAC)
	if n := len(s.readMACPool()); n != macPoolSize {
		t.Errorf("pool of %d", n)
	}
	all, _, _ := s.List()
	for i := 0; i < macPoolSize; i++ {
		if m := s.takeMAC(all); m == b.Config.MAC {
			t.Fatal("gave out a MAC in use")
		}
	}
}
