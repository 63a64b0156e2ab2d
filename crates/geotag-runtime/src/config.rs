//! Configuration from the environment variables template.yaml sets, read
//! once at cold start, the same way in every function: a variable that is
//! required and missing, or set to something that does not parse, stops the
//! cold start with one [`ConfigError`] naming the variable and its value.
//!
//! Functions read through an [`Environment`] over any lookup, so that the
//! local stack builds them from the template's environment exactly as Lambda
//! builds them from the process's.

use std::str::FromStr;

use crate::emf;

/// Why a function's configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name}={value:?} is not {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: String,
    },
}

/// A function's configuration, read from its environment: a function
/// implements [`FromEnvironment::read`]; `main` calls `from_env`, the local
/// stack and tests `from_lookup` with the template's variables.
pub trait FromEnvironment: Sized {
    fn read(env: &Environment) -> Result<Self, ConfigError>;

    /// From the process environment, as Lambda sets it.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&Environment::new(&lookup))
    }
}

/// The variables a function is configured by.
pub struct Environment<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Environment<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Environment<'a> {
        Environment { lookup }
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// `name` parsed as a `T`, or `default` when it is not set.
    pub fn parsed<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                name,
                value,
                expected: format!("a valid {}", std::any::type_name::<T>()),
            }),
        }
    }

    /// `name` as a finite number of at least zero, or `default`.
    pub fn non_negative(&self, name: &'static str, default: f64) -> Result<f64, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => match value.parse::<f64>() {
                Ok(number) if number.is_finite() && number >= 0.0 => Ok(number),
                _ => Err(ConfigError::Invalid {
                    name,
                    value,
                    expected: "a non-negative number".to_owned(),
                }),
            },
        }
    }

    /// `METRICS_NAMESPACE` and `AWS_LAMBDA_FUNCTION_NAME`, with `binary` as
    /// the name outside Lambda.
    pub fn metrics(&self, binary: &str) -> emf::Settings {
        emf::Settings::from_lookup(self.lookup, binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(candidate, _)| *candidate == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn names_the_variable_that_is_missing_or_wrong() {
        let pairs = lookup(&[("DAYS", "thirty"), ("LIMIT", "-1"), ("TABLE", "t")]);
        let env = Environment::new(&pairs);
        assert_eq!(env.required("TABLE").unwrap(), "t");
        assert_eq!(env.required("QUEUE"), Err(ConfigError::Missing("QUEUE")));
        assert_eq!(env.parsed("UNSET", 7u32).unwrap(), 7);
        let error = env.parsed("DAYS", 30u32).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable DAYS=\"thirty\" is not a valid u32"
        );
        let error = env.non_negative("LIMIT", 1.0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable LIMIT=\"-1\" is not a non-negative number"
        );
        for odd in ["NaN", "inf", "1e999"] {
            let one = move |_: &str| Some(odd.to_owned());
            assert!(
                Environment::new(&one).non_negative("X", 0.0).is_err(),
                "{odd}"
            );
        }
    }
}
