//! Puts the git commit Glimpse is built from in `GLIMPSE_GIT_SHA` (for `--version` and
//! `glimpse_build_info`): `GLIMPSE_GIT_SHA` from the environment when set (a build without
//! `.git`, e.g. in Docker), else `git rev-parse`, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=GLIMPSE_GIT_SHA");
    let sha = std::env::var("GLIMPSE_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Rebuilt when HEAD moves: HEAD itself (a branch switch) and the branch's ref (a commit).
    for path in [
        git(&["rev-parse", "--git-path", "HEAD"]),
        git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])),
        git(&["rev-parse", "--git-path", "packed-refs"]),
    ]
    .into_iter()
    .flatten()
    {
        let path = std::path::absolute(&path).unwrap_or(path.into());
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=GLIMPSE_GIT_SHA={sha}");
}
