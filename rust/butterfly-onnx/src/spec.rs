//! The preprocessing a model contract records ([`PreprocessSpec`], contract.py's
//! `PreprocessSpec`), its two enums, its limits and its one validator ([`check_spec`]).
//!
//! This module sits below both `contract` (which reads and writes it as JSON) and
//! `preprocess` (which runs it), so neither of those imports the other. Each enum name is
//! spelled once, in its `as_str`; `FromStr`, the error messages and the name lists all derive
//! from it.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

// Limits: the same constants as contract.py (MAX_SIZE, MEAN_RANGE, STD_RANGE); the shared
// fixtures pin them. docs/contract.md#limits.

/// `resize_size`, `crop_size` and `max_size` are integers in `1..=MAX_SIZE` (a crop of 8192
/// is already 805 MB of float32 per image).
pub const MAX_SIZE: u32 = 8192;
/// Each `mean` entry lies in this closed range, each `std` entry in [`STD_RANGE`], so that
/// `(pixel - mean) / std` stays within +-1e6 for pixels in [0, 1]: never inf or NaN.
pub const MEAN_RANGE: (f64, f64) = (-1000.0, 1000.0);
pub const STD_RANGE: (f64, f64) = (1e-3, 1000.0);

/// The Pillow filter used by `Resize` (torchvision `InterpolationMode` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

impl Interpolation {
    /// Every variant, in contract.py's `INTERPOLATIONS` order.
    pub const ALL: [Interpolation; 2] = [Interpolation::Bilinear, Interpolation::Bicubic];

    /// The contract's name (torchvision's `InterpolationMode` value): the one spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        }
    }
}

/// Pillow's rule for the order of the two resampling passes; the order changes results by 1
/// on many pixels, so the contract records the rule the model was validated with
/// (`contract.py::RESAMPLE_ORDERS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResampleOrder {
    /// Pillow <= 12.1: horizontal pass first, always.
    Pillow12_1,
    /// Pillow 12.2-12.3: horizontal first, except when `H > 100 * W` and the height shrinks.
    Pillow12_2,
    /// Pillow >= 13.0: vertical first when `(H - h) > 0` and `(H - h) > 2 * (W - w)`.
    Pillow13,
}

impl ResampleOrder {
    /// Every variant, in contract.py's `RESAMPLE_ORDERS` order.
    pub const ALL: [ResampleOrder; 3] = [ResampleOrder::Pillow12_1, ResampleOrder::Pillow12_2, ResampleOrder::Pillow13];

    /// The contract's name: the one spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResampleOrder::Pillow12_1 => "pillow_12_1",
            ResampleOrder::Pillow12_2 => "pillow_12_2",
            ResampleOrder::Pillow13 => "pillow_13",
        }
    }

    /// Whether Pillow resizes `in_w x in_h` to `out_w x out_h` with the vertical pass first.
    /// Only meaningful when both axes change (otherwise there is one pass).
    pub fn vertical_first(self, in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> bool {
        let (in_w, in_h, out_w, out_h) = (in_w as i64, in_h as i64, out_w as i64, out_h as i64);
        match self {
            ResampleOrder::Pillow12_1 => false,
            ResampleOrder::Pillow12_2 => in_h > 100 * in_w && out_h < in_h,
            ResampleOrder::Pillow13 => {
                let shrink_h = in_h - out_h;
                shrink_h > 0 && shrink_h > 2 * (in_w - out_w)
            }
        }
    }
}

/// A contract name enum: its variants and their one spelling.
pub(crate) trait Named: Copy + 'static {
    const ALL: &'static [Self];
    const WHAT: &'static str;
    fn name(self) -> &'static str;

    /// The variant called `name`.
    fn find(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }

    /// The names quoted and joined as `open`..`close`, e.g. Python's tuple repr
    /// `('bilinear', 'bicubic')` or `"bilinear", "bicubic"`.
    fn names(quote: char, open: &str, close: &str) -> String {
        let quoted: Vec<String> = Self::ALL.iter().map(|v| format!("{quote}{}{quote}", v.name())).collect();
        format!("{open}{}{close}", quoted.join(", "))
    }

    /// `FromStr`'s error: `interpolation must be one of "bilinear", "bicubic", got "x"`.
    fn parse(s: &str) -> Result<Self> {
        Self::find(s).ok_or_else(|| Error::InvalidArgument {
            reason: format!("{} must be one of {}, got {s:?}", Self::WHAT, Self::names('"', "", "")),
        })
    }
}

impl Named for Interpolation {
    const ALL: &'static [Self] = &Interpolation::ALL;
    const WHAT: &'static str = "interpolation";
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl Named for ResampleOrder {
    const ALL: &'static [Self] = &ResampleOrder::ALL;
    const WHAT: &'static str = "resample_order";
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl FromStr for Interpolation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Named::parse(s)
    }
}

impl FromStr for ResampleOrder {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Named::parse(s)
    }
}

impl fmt::Display for Interpolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ResampleOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The preprocessing of a model contract (`contract.py::PreprocessSpec`). `mean` and `std` are
/// float32 because torchvision casts them to the tensor's dtype before normalizing.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessSpec {
    pub resize_size: u32,
    pub crop_size: u32,
    pub interpolation: Interpolation,
    pub max_size: Option<u32>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resample_order: ResampleOrder,
}

impl PreprocessSpec {
    /// Floats in one image's CHW tensor: `3 * crop_size * crop_size`.
    pub fn output_len(&self) -> usize {
        3 * self.crop_size as usize * self.crop_size as usize
    }

    /// [`check_spec`] as an `InvalidArgument` error, so a crop can never ask for more.
    pub fn validate(&self) -> Result<()> {
        check_spec(self).map_err(|reason| Error::InvalidArgument { reason })
    }
}

/// The one validator of a [`PreprocessSpec`] built in Rust (the JSON reader checks the same
/// rules on the document, before the float32 conversion): sizes in `1..=MAX_SIZE`,
/// `max_size > resize_size`, `mean` in [`MEAN_RANGE`], `std` in [`STD_RANGE`]. The message
/// says what is wrong, without a source.
pub fn check_spec(spec: &PreprocessSpec) -> std::result::Result<(), String> {
    let sizes =
        [("resize_size", Some(spec.resize_size)), ("crop_size", Some(spec.crop_size)), ("max_size", spec.max_size)];
    for (name, value) in sizes {
        if let Some(value) = value {
            if !(1..=MAX_SIZE).contains(&value) {
                return Err(format!("preprocess.{name} must be a positive integer <= {MAX_SIZE}, got {value}"));
            }
        }
    }
    check_max_size(spec.max_size, spec.resize_size)?;
    for (name, values, (low, high)) in [("mean", spec.mean, MEAN_RANGE), ("std", spec.std, STD_RANGE)] {
        if !values.iter().all(|&v| (v as f64).is_finite() && low <= v as f64 && v as f64 <= high) {
            return Err(format!("preprocess.{name} must be 3 finite numbers in [{low}, {high}], got {values:?}"));
        }
    }
    Ok(())
}

/// torchvision's rule on `max_size` (contract.py checks it in the same place of its order).
pub(crate) fn check_max_size(max_size: Option<u32>, resize_size: u32) -> std::result::Result<(), String> {
    match max_size {
        Some(max_size) if max_size <= resize_size => Err(format!(
            "preprocess.max_size ({max_size}) must be greater than resize_size ({resize_size}), as torchvision requires"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_list_in_the_contract_order() {
        for v in Interpolation::ALL {
            assert_eq!(v.as_str().parse::<Interpolation>().unwrap(), v);
        }
        for v in ResampleOrder::ALL {
            assert_eq!(v.as_str().parse::<ResampleOrder>().unwrap(), v);
        }
        assert_eq!(<Interpolation as Named>::names('\'', "(", ")"), "('bilinear', 'bicubic')");
        let err = "nearest".parse::<Interpolation>().unwrap_err().to_string();
        assert_eq!(err, r#"invalid argument: interpolation must be one of "bilinear", "bicubic", got "nearest""#);
    }
}
