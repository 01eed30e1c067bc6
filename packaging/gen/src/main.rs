//! sluice-pkg-gen: writes the man pages and shell completions of `sluiced`, `sluicectl` and
//! `sluice-agent`, generated from the clap definitions the binaries parse with
//! (`sluice_control::cli`, `sluice_agent::cli`), into a staging directory laid out as the
//! package installs them:
//!
//!   sluice-pkg-gen OUT    OUT/man/NAME.1 (and NAME-SUBCOMMAND.1 per subcommand)
//!                         OUT/completions/bash/NAME, OUT/completions/zsh/_NAME,
//!                         OUT/completions/fish/NAME.fish
//!
//! `scripts/package.sh` runs it before `cargo deb`.

use clap::CommandFactory;
use clap_complete::Shell;
use sluice_agent::cli as agent;
use sluice_control::cli::{sluicectl, sluiced};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The three commands, as their binaries define them.
fn commands() -> [clap::Command; 3] {
    [sluiced::Cli::command(), sluicectl::Cli::command(), agent::Cli::command()]
}

/// Where a shell's completion file for `name` goes under `out`, named as that shell looks it
/// up (bash-completion by the command's name, zsh `_name`, fish `name.fish`).
fn completion_path(out: &Path, shell: Shell, name: &str) -> PathBuf {
    let file = match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => name.to_string(),
    };
    out.join("completions").join(shell.to_string()).join(file)
}

/// Writes the man page of `cmd` (built) and of each of its subcommands into `dir`, each footed
/// with the package's name and version (clap_mangen's own would give a subcommand's name only).
fn man_pages(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir)?;
    }
    let source = concat!("sluice ", env!("CARGO_PKG_VERSION"));
    clap_mangen::Man::new(cmd.clone()).source(source).generate_to(dir).map(|_| ())
}

/// Writes `cmd`'s man pages (one per subcommand too) and its bash, zsh and fish completions.
fn generate(cmd: clap::Command, out: &Path) -> Result<(), String> {
    let name = cmd.get_name().to_string();
    let man = out.join("man");
    std::fs::create_dir_all(&man).map_err(|e| format!("{}: {e}", man.display()))?;
    let mut built = cmd.clone().disable_help_subcommand(true);
    built.build();
    man_pages(&built, &man).map_err(|e| format!("{name}'s man pages: {e}"))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = completion_path(out, shell, &name);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().unwrap_or(out))?;
            let mut file = std::fs::File::create(&path)?;
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut file);
            Ok(())
        };
        write().map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = &args[..] else {
        eprintln!("usage: sluice-pkg-gen OUT_DIR");
        return ExitCode::from(2);
    };
    for cmd in commands() {
        if let Err(e) = generate(cmd, Path::new(out)) {
            eprintln!("sluice-pkg-gen: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_consistent() {
        for cmd in commands() {
            cmd.debug_assert();
        }
    }

    #[test]
    fn completion_files_are_named_as_each_shell_looks_them_up() {
        let out = Path::new("/o");
        assert_eq!(
            completion_path(out, Shell::Bash, "sluicectl"),
            Path::new("/o/completions/bash/sluicectl")
        );
        assert_eq!(completion_path(out, Shell::Zsh, "sluicectl"), Path::new("/o/completions/zsh/_sluicectl"));
        assert_eq!(
            completion_path(out, Shell::Fish, "sluicectl"),
            Path::new("/o/completions/fish/sluicectl.fish")
        );
    }
}
