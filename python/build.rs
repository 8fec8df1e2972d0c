//! Refuses an abi3 build for a CPython older than 3.11, which would build and then fail at
//! import (PyO3's abi3-py311 code needs 3.11's stable ABI; maturin does not turn the
//! feature off by itself). `pip install ./python` turns it off there (build_backend.py);
//! `maturin build` needs `--no-default-features` for such an interpreter.

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_ENVIRONMENT_SIGNATURE");
    if std::env::var_os("CARGO_FEATURE_ABI3").is_none() {
        return;
    }
    // maturin says which interpreter it builds for, e.g. "cpython-3.9-64bit"
    let Ok(signature) = std::env::var("PYO3_ENVIRONMENT_SIGNATURE") else {
        return;
    };
    let minor = signature
        .strip_prefix("cpython-3.")
        .and_then(|rest| rest.split('-').next())
        .and_then(|minor| minor.parse::<u32>().ok());
    if let Some(minor) = minor.filter(|minor| *minor < 11) {
        panic!(
            "building for CPython 3.{minor}: the abi3 wheel (feature `abi3`, on by default) needs \
             CPython 3.11 or later; build a wheel for this interpreter with \
             `maturin build --release --no-default-features` (pip install ./python does that)"
        );
    }
}
