//! Builds the kernel programs (`tunnel-ebpf`) for the BPF target with nightly and
//! `bpf-linker`, into `$OUT_DIR/tunnel-ebpf`, which `src/ebpf.rs` embeds. This is what makes a
//! plain `cargo build` whole. `AYA_BUILD_SKIP=1` skips it (for tools that only need the
//! library to type-check, e.g. rust-analyzer without bpf-linker).

use std::path::Path;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let workspace = Path::new(manifest_dir)
        .parent()
        .context("tunnel crate has no parent dir")?;
    let ebpf_dir = workspace.join("tunnel-ebpf");
    // aya-build watches the eBPF crate; the shared types it compiles in live next door.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("tunnel-common/src").display()
    );
    // aya-build forwards every stderr line of the inner cargo as a `cargo:warning`, which cargo
    // then replays on each build; a quiet inner cargo leaves only real diagnostics.
    // SAFETY: build scripts are single-threaded here; nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let package = aya_build::Package {
        name: "tunnel-ebpf",
        root_dir: ebpf_dir.to_str().context("non-UTF-8 workspace path")?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the eBPF programs (needs nightly with rust-src and bpf-linker; run `cargo xtask setup`)")
}
