//! The parts of an ONNX file that package validation checks, decoded without the weights.
//!
//! These are prost messages with the field numbers of the ONNX schema (`onnx.proto`), declaring
//! only the fields validation reads: the opset imports, the graph's declared inputs and outputs,
//! the initializers' names and dimensions, and the node count. Protobuf decoding skips every other
//! field, so the weights (`TensorProto.raw_data`, most of a file's bytes) are stepped over instead
//! of being copied: the whole file is still walked, so a truncated or malformed file still fails.
//! Full decoding (tract's) happens once, in the backend, or not at all when the backend loads its
//! cached form.

use tract_onnx::pb;

/// `ModelProto`: opset imports (8) and graph (7).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelSummary {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphSummary>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<pb::OperatorSetIdProto>,
}

/// `GraphProto`: nodes (1), initializers (5), inputs (11), outputs (12).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphSummary {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeSummary>,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<InitializerSummary>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<pb::ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<pb::ValueInfoProto>,
}

/// `NodeProto`: its output names (2), so that validation can check every graph output is made.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeSummary {
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
}

/// `TensorProto`: dimensions (1) and name (8).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InitializerSummary {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
}

/// Decodes the summary of the ONNX file at `path`, through a read-only memory map: the skipped
/// weights are never paged in. Errors are the I/O or protobuf message.
pub fn decode_file(path: &std::path::Path) -> Result<ModelSummary, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // SAFETY: the map is read-only and dropped before this returns; a file truncated by another
    // process meanwhile is the one hazard of any map, accepted for a package folder avseg reads.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    decode(&map).map_err(|e| e.to_string())
}

/// Decodes the summary of an ONNX file's bytes.
pub fn decode(bytes: &[u8]) -> Result<ModelSummary, prost::DecodeError> {
    prost::Message::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::Framework;

    /// The summary agrees with tract's full decoding on the bundled model.
    #[test]
    fn matches_the_full_decoding() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/segmenter.onnx");
        let full = tract_onnx::onnx().proto_model_for_path(&path).unwrap();
        let lite = decode_file(&path).unwrap();
        let (g, l) = (full.graph.as_ref().unwrap(), lite.graph.as_ref().unwrap());
        assert_eq!(g.node.len(), l.node.len());
        assert_eq!(g.input, l.input);
        assert_eq!(g.output, l.output);
        assert_eq!(full.opset_import, lite.opset_import);
        let names = |v: Vec<(String, Vec<i64>)>| v;
        assert_eq!(
            names(g.initializer.iter().map(|t| (t.name.clone(), t.dims.clone())).collect()),
            names(l.initializer.iter().map(|t| (t.name.clone(), t.dims.clone())).collect())
        );
        // A truncated file is an error, not a shorter model.
        let bytes = std::fs::read(&path).unwrap();
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
    }
}
