//! `--pre-run` and `--post-run`: a program run before or after a command. Upstream hands the
//! value to `/bin/bash`; here it is an argv and no shell is involved: the value is split on
//! whitespace into the program and its arguments (no quoting, globbing, variables or
//! redirections), and the program is executed directly. A script therefore needs its `#!`
//! line and the executable bit. Its output goes to keadm's.

use std::process::Command;

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flag is empty.
    #[error("{flag}: no program given")]
    Empty {
        /// `--pre-run` or `--post-run`.
        flag: &'static str,
    },
    /// The program could not be started.
    #[error(
        "{flag}: cannot run {program:?} (keadm runs it without a shell: it must be executable, with a #! line if it is a script)"
    )]
    Start {
        /// `--pre-run` or `--post-run`.
        flag: &'static str,
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program failed.
    #[error("{flag}: {program:?} exited with {status}")]
    Failed {
        /// `--pre-run` or `--post-run`.
        flag: &'static str,
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
}

/// The argv a hook flag's value stands for.
pub fn argv(flag: &'static str, value: &str) -> Result<Vec<String>, Error> {
    let argv: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
    if argv.is_empty() {
        return Err(Error::Empty { flag });
    }
    Ok(argv)
}

/// Runs the hook `value` of `flag` (if given) and waits for it; a non-zero exit is an error.
pub fn run(flag: &'static str, value: Option<&str>) -> Result<(), Error> {
    let Some(value) = value else { return Ok(()) };
    let argv = argv(flag, value)?;
    println!("[{flag}] Running {argv:?}.");
    let status = Command::new(&argv[0]).args(&argv[1..]).status().map_err(|source| Error::Start {
        flag,
        program: argv[0].clone(),
        source,
    })?;
    if !status.success() {
        return Err(Error::Failed { flag, program: argv[0].clone(), status });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_is_an_argv_split_on_whitespace() {
        assert_eq!(argv("--pre-run", " /bin/echo  a b ").unwrap(), ["/bin/echo", "a", "b"]);
        assert!(matches!(argv("--pre-run", "  "), Err(Error::Empty { .. })));
        // Shell syntax is not interpreted: `;` is an argument like any other.
        assert_eq!(argv("--post-run", "/bin/echo a; rm").unwrap(), ["/bin/echo", "a;", "rm"]);
    }

    #[test]
    fn failures_name_the_flag() {
        let e = run("--pre-run", Some("/bin/false")).unwrap_err();
        assert!(e.to_string().starts_with("--pre-run: \"/bin/false\" exited"), "{e}");
        let e = run("--post-run", Some("/nonexistent/hook")).unwrap_err();
        assert!(e.to_string().contains("without a shell"), "{e}");
        run("--pre-run", Some("/bin/true")).unwrap();
    }
}
