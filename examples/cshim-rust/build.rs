//! Links liblifeline.so (go build -buildmode=c-shared ./cshim).
//!
//! LIFELINE_LIB_DIR names the directory holding liblifeline.so (make
//! cshim-rust sets it). Without it the library is built here with the Go
//! toolchain into OUT_DIR. Either way the directory is written into the
//! binaries' rpath, so tests and programs run without LD_LIBRARY_PATH.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIFELINE_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = match env::var_os("LIFELINE_LIB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => build_with_go(),
    };
    if !dir.join("liblifeline.so").is_file() {
        panic!(
            "lifeline: {} has no liblifeline.so (build it: go build -buildmode=c-shared -o {}/liblifeline.so ./cshim)",
            dir.display(),
            dir.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=lifeline");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
}

fn build_with_go() -> PathBuf {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../..");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    // Go's own build cache makes a rebuild cheap; rerun when the shim changes.
    println!("cargo:rerun-if-changed={}", root.join("cshim").display());
    let go = env::var_os("GO").unwrap_or_else(|| "go".into());
    let status = Command::new(&go)
        .current_dir(&root)
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(out.join("liblifeline.so"))
        .arg("./cshim")
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "lifeline: LIFELINE_LIB_DIR is unset and running {:?} failed: {}",
                go, e
            )
        });
    if !status.success() {
        panic!(
            "lifeline: go build -buildmode=c-shared ./cshim failed ({})",
            status
        );
    }
    let _ = std::fs::remove_file(out.join("liblifeline.h"));
    out
}
