//! Min-max scaling as scikit-learn's `MinMaxScaler` (feature range [0, 1]) does it:
//! fit `scale = 1 / (max - min)` (1 when the range is 0) and `min = 0 - data_min * scale`;
//! transform `x * scale + min` (two IEEE operations, no fused multiply-add).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors loading, fitting or saving a scaler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScalerError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not a valid scaler.
    #[error("{path}: not a min-max scaler: {detail}")]
    Invalid {
        /// File.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// No finite amount to fit on.
    #[error("no valid amount to fit a scaler on")]
    NoData,
}

/// The fitted parameters, in the JSON layout of `scaler.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Always "min_max".
    #[serde(default = "min_max")]
    pub kind: String,
    /// Target range, [0, 1].
    #[serde(default = "unit_range")]
    pub feature_range: [f64; 2],
    /// Smallest amount seen when fitting.
    pub data_min: f64,
    /// Largest amount seen when fitting.
    pub data_max: f64,
    /// Multiplier.
    pub scale: f64,
    /// Offset added after multiplying.
    pub min: f64,
    /// Rows the scaler was fitted on.
    #[serde(default)]
    pub n_samples_seen: u64,
}

fn min_max() -> String {
    "min_max".into()
}
fn unit_range() -> [f64; 2] {
    [0.0, 1.0]
}

/// `data/scaler.json` as shipped: the reference fit, compiled in.
const REFERENCE_JSON: &str = include_str!("../../data/scaler.json");
/// Where a scaler is looked for when none is named.
const DEFAULT_PATH: &str = "data/scaler.json";

impl Scaler {
    /// Scales one amount.
    #[inline]
    pub fn transform(&self, x: f64) -> f64 {
        x * self.scale + self.min
    }

    /// Fits on amounts (non-finite ones are ignored), like `MinMaxScaler().fit`.
    pub fn fit(amounts: impl IntoIterator<Item = f64>) -> Result<Scaler, ScalerError> {
        let (mut lo, mut hi, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0u64);
        for x in amounts.into_iter().filter(|x| x.is_finite()) {
            lo = lo.min(x);
            hi = hi.max(x);
            n += 1;
        }
        if n == 0 {
            return Err(ScalerError::NoData);
        }
        let (f0, f1) = (0.0, 1.0);
        let range = hi - lo;
        // sklearn's _handle_zeros_in_scale: a zero range scales by 1.
        let range = if range == 0.0 { 1.0 } else { range };
        let scale = (f1 - f0) / range;
        Ok(Scaler {
            kind: min_max(),
            feature_range: [f0, f1],
            data_min: lo,
            data_max: hi,
            scale,
            min: f0 - lo * scale,
            n_samples_seen: n,
        })
    }

    /// Reads `scaler.json`.
    pub fn load(path: &Path) -> Result<Scaler, ScalerError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScalerError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, p)
    }

    /// The reference scaler the original tool was fitted with (`data/scaler.json`, built
    /// into the binary).
    pub fn reference() -> Result<Scaler, ScalerError> {
        Self::parse(REFERENCE_JSON, "the built-in reference scaler".into())
    }

    /// The scaler to use: `explicit` if given, else `data/scaler.json` if it exists, else
    /// the built-in reference one; with a description of which it is.
    pub fn resolve(explicit: Option<&Path>) -> Result<(Scaler, String), ScalerError> {
        let local = Path::new(DEFAULT_PATH);
        match explicit {
            Some(path) => Ok((Self::load(path)?, path.display().to_string())),
            None if local.is_file() => Ok((Self::load(local)?, DEFAULT_PATH.to_string())),
            None => Ok((
                Self::reference()?,
                "the built-in reference scaler".to_string(),
            )),
        }
    }

    fn parse(text: &str, p: String) -> Result<Scaler, ScalerError> {
        let s: Scaler = serde_json::from_str(text).map_err(|e| ScalerError::Invalid {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        if s.kind != "min_max" || !s.scale.is_finite() || !s.min.is_finite() {
            return Err(ScalerError::Invalid {
                path: p,
                detail: format!("kind {:?}, scale {}, min {}", s.kind, s.scale, s.min),
            });
        }
        Ok(s)
    }

    /// Writes `scaler.json` (pretty-printed, like the reference file).
    pub fn save(&self, path: &Path) -> Result<(), ScalerError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ScalerError::Invalid {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|source| ScalerError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Scaler {
        serde_json::from_str(include_str!("../../tests/data/parity/scaler.json")).unwrap()
    }

    #[test]
    fn the_built_in_scaler_is_the_reference_one() {
        let built_in = Scaler::reference().unwrap();
        let r = reference();
        assert_eq!(built_in.scale.to_bits(), r.scale.to_bits());
        assert_eq!(built_in.min.to_bits(), r.min.to_bits());
        let named = Scaler::resolve(Some(Path::new("no/such/scaler.json")));
        assert!(named.is_err(), "a named scaler that is missing is an error");
    }

    #[test]
    fn fitting_the_reference_range_reproduces_the_reference_parameters() {
        let r = reference();
        let fitted = Scaler::fit([r.data_max, 12.5, r.data_min, f64::NAN]).unwrap();
        assert_eq!(fitted.scale.to_bits(), r.scale.to_bits());
        assert_eq!(fitted.min.to_bits(), r.min.to_bits());
        assert_eq!(fitted.n_samples_seen, 3);
        assert_eq!(fitted.transform(r.data_min), 0.0);
        assert_eq!(fitted.transform(r.data_max), 1.0);
    }

    #[test]
    fn constant_data_scales_by_one() {
        let s = Scaler::fit([5.0, 5.0]).unwrap();
        assert_eq!((s.scale, s.min), (1.0, -5.0));
        assert!(matches!(Scaler::fit([f64::NAN]), Err(ScalerError::NoData)));
    }

    #[test]
    fn round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let s = Scaler::fit([-3.0, 9.5]).unwrap();
        s.save(&path).unwrap();
        assert_eq!(Scaler::load(&path).unwrap(), s);
        std::fs::write(&path, "{\"kind\": \"min_max\"}").unwrap();
        assert!(matches!(
            Scaler::load(&path),
            Err(ScalerError::Invalid { .. })
        ));
    }
}
