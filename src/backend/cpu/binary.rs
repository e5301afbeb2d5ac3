//! `AvBinary`: element-wise Add, Sub, Mul, Div, Max and Min of two f32 tensors with numpy
//! broadcasting.
//!
//! tract runs these fast when one side is a scalar or both shapes are equal, but a tensor against
//! one broadcast along some axes (a LayerNorm's `x − mean[…, 1]`, `x · γ[1, 1, 1, C]`) takes a
//! generic per-element path. Here the shapes are fixed at load time and reduced to rows: the
//! innermost run of axes both operands share (or one broadcasts) is one vectorised loop, and the
//! outer axes only move the two row starts.

use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::output;

/// The operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinKind {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl BinKind {
    /// The kind for a tract binary operator's name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Add" => BinKind::Add,
            "Sub" => BinKind::Sub,
            "Mul" => BinKind::Mul,
            "Div" => BinKind::Div,
            "Max" => BinKind::Max,
            "Min" => BinKind::Min,
            _ => return None,
        })
    }

    /// The operation on one pair (the tests' reference; the kernel picks it outside its loops).
    #[cfg(test)]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinKind::Add => a + b,
            BinKind::Sub => a - b,
            BinKind::Mul => a * b,
            BinKind::Div => a / b,
            BinKind::Max => a.max(b),
            BinKind::Min => a.min(b),
        }
    }
}

/// How one operand is read along a row: every element, or one value repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Inner {
    Full,
    Repeat,
}

/// The operator, planned for fixed shapes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AvBinary {
    pub kind: BinKind,
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    out_shape: Vec<usize>,
    /// Elements per row (the collapsed inner axes).
    row: usize,
    a_inner: Inner,
    b_inner: Inner,
    /// Per outer axis: its length, and how far each operand's row start moves per step.
    outer: Vec<(usize, usize, usize)>,
}

impl AvBinary {
    /// Plans `kind` for operands of shapes `a` and `b` (numpy broadcasting). None when the shapes
    /// do not broadcast.
    pub fn plan(kind: BinKind, a: &[usize], b: &[usize]) -> Option<Self> {
        let rank = a.len().max(b.len());
        let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
        let (pa, pb) = (pad(a), pad(b));
        let mut out = Vec::with_capacity(rank);
        for (&x, &y) in pa.iter().zip(&pb) {
            out.push(match (x, y) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return None,
            });
        }
        let strides = |s: &[usize]| -> Vec<usize> {
            let mut st = vec![0; rank];
            let mut acc = 1;
            for i in (0..rank).rev() {
                st[i] = if s[i] == 1 { 0 } else { acc };
                acc *= s[i];
            }
            st
        };
        let (sa, sb) = (strides(&pa), strides(&pb));
        // Collapse the innermost axes while both operands keep one pattern (full or repeated).
        let pattern = |i: usize| ((sa[i] != 0 || out[i] == 1), (sb[i] != 0 || out[i] == 1));
        let mut split = rank;
        let mut row = 1;
        let mut inner_pattern = None;
        while split > 0 {
            let i = split - 1;
            if out[i] == 1 {
                split -= 1;
                continue;
            }
            let p = pattern(i);
            if inner_pattern.is_some_and(|q| q != p) {
                break;
            }
            inner_pattern = Some(p);
            row *= out[i];
            split -= 1;
        }
        let (fa, fb) = inner_pattern.unwrap_or((true, true));
        let outer = (0..split).filter(|&i| out[i] > 1).map(|i| (out[i], sa[i], sb[i])).collect();
        Some(AvBinary {
            kind,
            a_shape: a.to_vec(),
            b_shape: b.to_vec(),
            out_shape: out,
            row,
            a_inner: if fa { Inner::Full } else { Inner::Repeat },
            b_inner: if fb { Inner::Full } else { Inner::Repeat },
            outer,
        })
    }

    /// The operands' shapes the plan was made for.
    pub fn a_shape(&self) -> &[usize] {
        &self.a_shape
    }
    pub fn b_shape(&self) -> &[usize] {
        &self.b_shape
    }

    /// Elements per inner row: the length of each vectorised loop.
    pub fn row_len(&self) -> usize {
        self.row
    }

    pub fn out_len(&self) -> usize {
        self.out_shape.iter().product()
    }

    /// Row starts of `a` and `b` for output row `r`.
    #[inline]
    fn starts(&self, mut r: usize) -> (usize, usize) {
        let (mut oa, mut ob) = (0, 0);
        for &(len, sa, sb) in self.outer.iter().rev() {
            let i = r % len;
            r /= len;
            oa += i * sa;
            ob += i * sb;
        }
        (oa, ob)
    }

    /// `y = a ∘ b`.
    pub fn run(&self, a: &[f32], b: &[f32], y: &mut [f32], threads: usize) {
        if threads > 1 && y.len() >= 1 << 16 {
            // Rows may be short: hand out several per task.
            let per = (4096 / self.row).max(1);
            y.par_chunks_mut(self.row * per).enumerate().for_each(|(c, chunk)| rows_simd(self, a, b, c * per, chunk));
        } else {
            rows_simd(self, a, b, 0, y);
        }
    }
}

per_isa!(fn rows_simd(op: &AvBinary, a: &[f32], b: &[f32], first: usize, out: &mut [f32]) = rows);

/// Output rows `first..` into `out`, with the operation chosen outside the loops so that each
/// loop is one vector instruction per lane group.
#[inline(always)]
fn rows(op: &AvBinary, a: &[f32], b: &[f32], first: usize, out: &mut [f32]) {
    match op.kind {
        BinKind::Add => rows_with(op, a, b, first, out, |x, y| x + y),
        BinKind::Sub => rows_with(op, a, b, first, out, |x, y| x - y),
        BinKind::Mul => rows_with(op, a, b, first, out, |x, y| x * y),
        BinKind::Div => rows_with(op, a, b, first, out, |x, y| x / y),
        BinKind::Max => rows_with(op, a, b, first, out, f32::max),
        BinKind::Min => rows_with(op, a, b, first, out, f32::min),
    }
}

#[inline(always)]
fn rows_with(op: &AvBinary, a: &[f32], b: &[f32], first: usize, out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    for (i, o) in out.chunks_mut(op.row).enumerate() {
        let (oa, ob) = op.starts(first + i);
        let n = o.len();
        match (op.a_inner, op.b_inner) {
            (Inner::Full, Inner::Full) => {
                for ((o, x), y) in o.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
                    *o = f(*x, *y);
                }
            }
            (Inner::Full, Inner::Repeat) => {
                let y = b[ob];
                for (o, x) in o.iter_mut().zip(&a[oa..oa + n]) {
                    *o = f(*x, y);
                }
            }
            (Inner::Repeat, Inner::Full) => {
                let x = a[oa];
                for (o, y) in o.iter_mut().zip(&b[ob..ob + n]) {
                    *o = f(x, *y);
                }
            }
            (Inner::Repeat, Inner::Repeat) => o.fill(f(a[oa], b[ob])),
        }
    }
}

impl Op for AvBinary {
    fn name(&self) -> StaticName {
        format!("AvBinary({:?})", self.kind).into()
    }

    op_as_typed_op!();
}

impl EvalOp for AvBinary {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        ensure!(a.shape() == self.a_shape && b.shape() == self.b_shape, "AvBinary: shapes {:?} {:?}", a.shape(), b.shape());
        let xa = a.try_as_plain_ram()?.as_slice::<f32>()?;
        let xb = b.try_as_plain_ram()?.as_slice::<f32>()?;
        Ok(tvec!(output(&self.out_shape, |y, threads| self.run(xa, xb, y, threads))?.into_tvalue()))
    }
}

impl TypedOp for AvBinary {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2);
        Ok(tvec!(f32::fact(&self.out_shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Broadcasting written from its definition: every output index mapped back to each operand.
    fn naive(kind: BinKind, a: &[f32], sa: &[usize], b: &[f32], sb: &[usize]) -> (Vec<usize>, Vec<f32>) {
        let rank = sa.len().max(sb.len());
        let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
        let (pa, pb) = (pad(sa), pad(sb));
        let out: Vec<usize> = pa.iter().zip(&pb).map(|(x, y)| *x.max(y)).collect();
        let total: usize = out.iter().product();
        let flat = |s: &[usize], idx: &[usize]| idx.iter().zip(s).fold(0, |acc, (i, d)| acc * d + if *d == 1 { 0 } else { *i });
        let mut y = Vec::with_capacity(total);
        for mut f in 0..total {
            let mut idx = vec![0; rank];
            for i in (0..rank).rev() {
                idx[i] = f % out[i];
                f /= out[i];
            }
            y.push(kind.apply(a[flat(&pa, &idx)], b[flat(&pb, &idx)]));
        }
        (out, y)
    }

    #[test]
    fn broadcasting_matches_the_definition() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[5, 4, 4, 8], &[5, 4, 4, 1]),
            (&[5, 4, 4, 8], &[1, 1, 1, 8]),
            (&[2, 3, 5], &[2, 3, 5]),
            (&[2, 1, 5], &[1, 3, 1]),
            (&[3, 1], &[1, 4]),
            (&[7], &[2, 3, 7]),
            (&[2, 3, 1, 1], &[2, 3, 4, 5]),
            (&[1], &[6, 1]),
        ];
        for kind in [BinKind::Add, BinKind::Sub, BinKind::Mul, BinKind::Div, BinKind::Max, BinKind::Min] {
            for (sa, sb) in cases {
                let a: Vec<f32> = (0..sa.iter().product::<usize>()).map(|i| i as f32 * 0.5 - 3.0).collect();
                let b: Vec<f32> = (0..sb.iter().product::<usize>()).map(|i| 1.0 + (i % 7) as f32).collect();
                let (shape, want) = naive(kind, &a, sa, &b, sb);
                let op = AvBinary::plan(kind, sa, sb).unwrap();
                assert_eq!(op.out_shape, shape);
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; want.len()];
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    pool.install(|| op.run(&a, &b, &mut y, threads));
                    assert_eq!(y, want, "{kind:?} {sa:?} {sb:?} threads {threads}");
                }
            }
        }
        assert!(AvBinary::plan(BinKind::Add, &[2, 3], &[3, 2]).is_none());
    }
}
