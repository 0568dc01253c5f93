//! Running as a kubectl plugin: kubectl runs `kubectl-sforg` from the PATH for
//! `kubectl sforg ...`, so the same binary installed (or linked) under that name is the
//! plugin, and its help speaks of `kubectl sforg`.

use std::ffi::OsStr;
use std::path::Path;

/// The executable name kubectl looks for.
pub const PLUGIN_EXECUTABLE: &str = "kubectl-sforg";
/// How the plugin is invoked, as its help shows it.
pub const PLUGIN_COMMAND: &str = "kubectl sforg";

/// Whether the process was started as the kubectl plugin, from its `argv[0]`.
pub fn invoked_as_plugin(argv0: Option<&OsStr>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_stem())
        .and_then(OsStr::to_str)
        .is_some_and(|stem| stem == PLUGIN_EXECUTABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_recognized_by_its_executable_name() {
        let cases = [
            (Some("/usr/local/bin/kubectl-sforg"), true),
            (Some("kubectl-sforg"), true),
            (Some("C:\\bin\\kubectl-sforg.exe"), cfg!(windows)),
            (Some("kubectl-sforg.exe"), true),
            (Some("/usr/bin/sforg-operator"), false),
            (Some("kubectl-sforgx"), false),
            (None, false),
        ];
        for (argv0, want) in cases {
            assert_eq!(invoked_as_plugin(argv0.map(OsStr::new)), want, "{argv0:?}");
        }
    }
}
