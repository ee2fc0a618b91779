//! torchvision's `ToTensor` + `Normalize` on uint8 pixels.

use std::cell::RefCell;
use std::rc::Rc;

/// `(p / 255 - mean) / std` in float32 with true divisions, as torch computes it
/// (`img.to(float32).div(255)`, then `sub_(mean).div_(std)`). Multiplying by a reciprocal, or a
/// fused multiply-add, changes the last bit of hundreds of the 768 (level, channel) values.
#[inline]
pub fn normalize_level(level: u8, mean: f32, std: f32) -> f32 {
    let x = level as f32 / 255.0;
    (x - mean) / std
}

/// The 256 normalized values of each channel: the pixel pass looks them up.
pub struct NormalizeTable {
    pub channels: [[f32; 256]; 3],
}

impl NormalizeTable {
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        let mut channels = [[0f32; 256]; 3];
        for (c, table) in channels.iter_mut().enumerate() {
            for (level, v) in table.iter_mut().enumerate() {
                *v = normalize_level(level as u8, mean[c], std[c]);
            }
        }
        NormalizeTable { channels }
    }
}

thread_local! {
    /// The last table built on this thread, by the bits of its mean and std.
    static LAST: RefCell<Option<([u32; 6], Rc<NormalizeTable>)>> = const { RefCell::new(None) };
}

impl NormalizeTable {
    /// [`NormalizeTable::new`], reusing this thread's previous table when mean and std are the
    /// same (every image of a model): 768 divisions saved per image.
    pub(crate) fn cached(mean: [f32; 3], std: [f32; 3]) -> Rc<NormalizeTable> {
        let key = [mean[0], mean[1], mean[2], std[0], std[1], std[2]].map(f32::to_bits);
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((k, table)) if *k == key => table.clone(),
                _ => {
                    let table = Rc::new(NormalizeTable::new(mean, std));
                    *last = Some((key, table.clone()));
                    table
                }
            }
        })
    }
}
