//! `stderr!` and `stderrln!`: `eprint!` and `eprintln!` that ignore a closed stderr, for every command.

/// `eprint!` that ignores a closed stderr: the exit status still tells how the run went.
macro_rules! stderr {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! stderrln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
