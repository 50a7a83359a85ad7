# heyvm's Homebrew formula, for the tap github.com/heyvm/homebrew-tap:
#
#   brew install heyvm/tap/heyvm
#
# It builds from the release's source with Go (cgo, for
# Virtualization.framework), signs the binary ad hoc with
# build/heyvm.entitlements as `make` does (without the entitlement the
# framework refuses to start VMs), and installs the man pages and shell
# completions generated from the command tree (tools/gendocs).
#
# The release workflow (.github/workflows/release.yml) copies this file to
# the tap with the tag and its commit filled in (scripts/render-formula.sh);
# the values below are placeholders until the first release.
class Heyvm < Formula
  desc "Full Linux VMs as throwaway or long-lived developer sandboxes"
  homepage "https://github.com/heyvm/heyvm"
  url "https://github.com/heyvm/heyvm.git",
      tag:      "v0.0.0",
      revision: "0000000000000000000000000000000000000000"
  head "https://github.com/heyvm/heyvm.git", branch: "main"

  depends_on "go" => :build
  depends_on arch: :arm64
  depends_on macos: :ventura

  def install
    commit = build.head? ? Utils.git_head : stable.specs[:revision]
    pkg = "github.com/heyvm/heyvm/internal/version"
    ldflags = %W[
      -s -w
      -X #{pkg}.version=v#{version}
      -X #{pkg}.commit=#{commit}
      -X #{pkg}.date=#{time.iso8601}
    ]
    ENV["CGO_ENABLED"] = "1"
    system "go", "build", *std_go_args(ldflags: ldflags), "./cmd/heyvm"
    system "codesign", "--force", "--sign", "-", "--entitlements", "build/heyvm.entitlements", bin/"heyvm"

    system "go", "run", "./tools/gendocs", "-out", "gen", "-version", "v#{version}", "-date", time.iso8601
    man1.install Dir["gen/man/*.1"]
    bash_completion.install "gen/completions/heyvm.bash" => "heyvm"
    zsh_completion.install "gen/completions/_heyvm"
    fish_completion.install "gen/completions/heyvm.fish"
  end

  def caveats
    <<~EOS
      heyvm runs VMs with Apple's Virtualization.framework (macOS 13 or newer).
      Its default image is built on Linux and reaches the Mac through a registry
      (default_image_ref) or a file: see https://github.com/heyvm/heyvm#macos-apple_virt
    EOS
  end

  test do
    assert_match "heyvm v#{version}", shell_output("#{bin}/heyvm version")
    assert_match "darwin/arm64", shell_output("#{bin}/heyvm version")
    assert_match(/^apple_virt /, shell_output("#{bin}/heyvm backends"))
    # The signature carries the virtualization entitlement.
    assert_match "com.apple.security.virtualization",
                 shell_output("codesign -d --entitlements - #{bin}/heyvm 2>&1")
  end
end
