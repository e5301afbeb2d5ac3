//! A plain owned f32 tensor, row-major, used to hand data between the stages.
//!
//! The stages agree on layouts rather than on a tensor library: NCHW for images and logits,
//! `[T, 1, 96, 64]` for log-mel patches, `[T, D]` for audio embeddings.

/// Owned, contiguous, row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Wraps `data` with `shape`. Panics if the element counts differ: that is a programming error
    /// inside avseg, never a consequence of user input.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(n, data.len(), "tensor shape {shape:?} does not hold {} values", data.len());
        Self { shape, data }
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self { shape, data: vec![0.0; n] }
    }

    /// Gives the tensor `shape` and returns its elements to overwrite (values unspecified), keeping
    /// the buffers: it allocates only when the tensor grows beyond any size it had before, so a
    /// stage that writes the same shape every call allocates once.
    pub fn reshape_for_write(&mut self, shape: &[usize]) -> &mut [f32] {
        if self.shape != shape {
            self.shape.clear();
            self.shape.extend_from_slice(shape);
        }
        let n = shape.iter().product();
        self.data.resize(n, 0.0);
        &mut self.data
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// All elements, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// All elements, row-major, mutable (the shape is fixed).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the tensor, returning its elements.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Total number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no elements (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of elements in one slice along axis 0 (e.g. one frame of an NCHW batch).
    pub fn item_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The `i`-th slice along axis 0.
    pub fn item(&self, i: usize) -> &[f32] {
        let n = self.item_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// First non-finite value, if any, as (flat index, value).
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        self.data.iter().copied().enumerate().find(|(_, v)| !v.is_finite())
    }
}
