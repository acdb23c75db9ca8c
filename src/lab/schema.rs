//! The JSON Schema of the lab file, generated from the `spec` types (schemas/topology.schema.json).

/// The schema as pretty-printed JSON, exactly as committed in schemas/topology.schema.json.
pub fn schema_json() -> String {
    // Invariant: a serde_json::Value always serialises.
    serde_json::to_string_pretty(&crate::lab::spec::json_schema()).expect("schema serialises")
}
