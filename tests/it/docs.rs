//! The README's table reference is generated from the schema definitions the code uses.

#[test]
fn readme_table_reference_matches_the_schema() {
    let readme = std::fs::read_to_string(crate::common::repo().join("README.md")).unwrap();
    let start = readme
        .find("<!-- tables:begin -->")
        .expect("README lacks the tables:begin marker");
    let end = readme
        .find("<!-- tables:end -->")
        .expect("README lacks the tables:end marker");
    let current = readme[start + "<!-- tables:begin -->".len()..end].trim();
    let expected = elevflyt::schema::markdown_reference();
    assert_eq!(current, expected.trim(), "regenerate with `make docs`");
}

/// The shell blocks of the README, their lines joined (`make` lines left out: the test does
/// what `make run` does itself).
fn readme_shell_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(crate::common::repo().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in readme.lines() {
        let indent = line.len() - line.trim_start().len();
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some((indent, String::new())),
            (Some(_), "```") => blocks.push(current.take().unwrap().1),
            (Some((indent, text)), _) => {
                let line = line.get(*indent..).unwrap_or(line.trim_start());
                if !line.starts_with("make ") {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            _ => {}
        }
    }
    blocks.retain(|b| !b.trim().is_empty());
    blocks
}

/// `make run`'s commands, from the Makefile, with `$(BIN)` as `elevflyt`.
fn make_run_commands() -> Vec<String> {
    let makefile = std::fs::read_to_string(crate::common::repo().join("Makefile")).unwrap();
    makefile
        .split("\nrun: build\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with('\t'))
        .map(|l| l.trim().replace("$(BIN)", "elevflyt"))
        .filter(|l| l.starts_with("elevflyt "))
        .collect()
}

#[test]
fn every_readme_command_runs_as_written_after_make_run() {
    let dir = crate::common::tempdir();
    let repo = crate::common::repo();
    // A copy of what `make run` reads, and `elevflyt` on the PATH.
    for sub in [
        "pipelines",
        "sample_data/bergen/vigilo",
        "sample_data/voss/vigo",
    ] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for f in std::fs::read_dir(repo.join(sub)).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, dir.path().join(sub).join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_elevflyt"), bin.join("elevflyt")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |script: &str| {
        std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(dir.path())
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let make_run = make_run_commands();
    assert_eq!(make_run.len(), 4, "{make_run:?}");
    for c in &make_run {
        let out = sh(c);
        assert!(
            out.status.success(),
            "make run: {c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let blocks = readme_shell_blocks();
    assert!(blocks.len() >= 6, "{blocks:?}");
    for block in blocks {
        let out = sh(&block);
        assert!(
            out.status.success(),
            "README block failed:\n{block}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
