//! Proptest strategies for the property tests of the parsers of network
//! input (invariant I4: no answer can panic the client).

use proptest::prelude::*;
use serde_json::{Value, json};

/// Arbitrary JSON whose object keys are mostly `keys` (the fields a decoder
/// reads), with scalars of every kind at every place.
pub(crate) fn json_with_keys(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(-1)),
        Just(json!(1e300)),
        ".{0,24}".prop_map(Value::String),
        "[0-9:.TZ+\\- ]{0,32}".prop_map(Value::String),
        Just(Value::String(String::new())),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        let key = prop_oneof![
            5 => proptest::sample::select(keys).prop_map(str::to_string),
            1 => ".{0,10}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes that are JSON of [`json_with_keys`], truncated at a random place
/// or not, or plain random bytes.
pub(crate) fn body_with_keys(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_with_keys(keys).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => (json_with_keys(keys), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let mut b = serde_json::to_vec(&v).unwrap();
            let n = i.index(b.len() + 1);
            b.truncate(n);
            b
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ]
}
