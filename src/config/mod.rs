//! Config in three steps: the file model (`model`, read by `load`), the checks
//! and compilation into the runtime model (`compile`), and the errors of both,
//! each with its place in the file (`error`, `source_map`).

mod compile;
mod env;
mod error;
mod load;
pub mod model;
mod source_map;
mod units;

pub use error::{did_you_mean, suggestion, ConfigError, ConfigErrors};
pub use model::ConfigFile;
pub use source_map::Location;
pub use units::{ByteSize, Duration};

use crate::gateway::Compiled;
use source_map::SourceMap;
use std::path::Path;

/// Parses and compiles config text: the one entry point `run` and `validate`
/// share. Blocks that do not parse are reported and the rest is still
/// compiled, so one run reports every error.
pub fn build(text: &str) -> Result<Compiled, ConfigErrors> {
    let partial = load::parse(text).map_err(|errors| located(errors, text))?;
    let mut errors = partial.errors;
    match compile::compile(&partial.file, &partial.unparsed_upstreams) {
        Ok(compiled) if errors.is_empty() => Ok(compiled),
        Ok(_) => Err(located(errors, text)),
        Err(more) => {
            errors.errors.extend(more.errors);
            Err(located(errors, text))
        }
    }
}

/// Reads and builds a config file.
pub fn build_file(path: &Path) -> Result<Compiled, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut errors = ConfigErrors::default();
        errors.push("", format!("cannot read {}: {e}", path.display()));
        errors
    })?;
    build(&text)
}

fn located(mut errors: ConfigErrors, text: &str) -> ConfigErrors {
    errors.locate(&SourceMap::build(text));
    errors
}
