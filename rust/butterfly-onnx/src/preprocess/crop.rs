//! torchvision's `CenterCrop` on a PIL image, one axis at a time
//! (`transforms/functional.py::center_crop`).

/// Where the crop of one axis comes from: `count` pixels of the (resized) image starting at
/// `src_start` land at `dst_start` in the crop; the rest of the crop is zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisCrop {
    pub src_start: usize,
    pub dst_start: usize,
    pub count: usize,
}

/// Center crop of an axis of length `len` to `crop`.
///
/// Smaller than the crop: torchvision pads with zeros, `(crop - len) // 2` before and
/// `(crop - len + 1) // 2` after, and the padded axis is then exactly `crop` long.
/// Otherwise the offset is `int(round((len - crop) / 2.0))`, Python's round being half to
/// even (85 / 2 -> 42), hence `round_ties_even`.
pub fn center_crop_axis(len: usize, crop: usize) -> AxisCrop {
    if len < crop {
        AxisCrop { src_start: 0, dst_start: (crop - len) / 2, count: len }
    } else {
        let offset = ((len - crop) as f64 / 2.0).round_ties_even() as usize;
        AxisCrop { src_start: offset, dst_start: 0, count: crop }
    }
}
