//! The mapping resolved against a schema: which columns are written, how
//! `_id` is made, and the tree of nested documents the renames build.

use std::collections::HashMap;

use arrow_schema::Schema;

use super::bson as b;
use super::{IdPlan, Leaf, Node};
use crate::config::MappingConfig;
use crate::error::{Error, Result};

/// The columns the mapping writes besides `_id`, checking every column a
/// setting names.
pub(super) fn included_columns(schema: &Schema, mapping: &MappingConfig) -> Result<Vec<usize>> {
    let index_of = |key: &str, name: &str| crate::error::column_index(schema, key, name);
    for name in mapping.rename.keys() {
        index_of(&format!("mapping.rename.{name}"), name)?;
    }
    for name in &mapping.exclude {
        index_of("mapping.exclude", name)?;
    }
    match &mapping.include {
        Some(list) => list
            .iter()
            .map(|n| index_of("mapping.include", n))
            .collect::<Result<_>>(),
        None => Ok((0..schema.fields().len())
            .filter(|&i| !mapping.exclude.iter().any(|e| e == schema.field(i).name()))
            .collect()),
    }
}

/// How `_id` is made: an ObjectId, one key column, or a sub-document of
/// several; the key columns' leaves are pushed first.
pub(super) fn id_plan(schema: &Schema, id_columns: &[usize], leaves: &mut Vec<Leaf>) -> IdPlan {
    match id_columns {
        [] => IdPlan::ObjectId,
        [c] => {
            leaves.push(Leaf {
                column: *c,
                key: b::cstring_key("_id"),
            });
            IdPlan::Column(0)
        }
        many => IdPlan::Composite(
            many.iter()
                .map(|&c| {
                    leaves.push(Leaf {
                        column: c,
                        key: b::cstring_key(schema.field(c).name()),
                    });
                    leaves.len() - 1
                })
                .collect(),
        ),
    }
}

/// The target paths of the included columns, in column order, as a tree
/// of nested documents; a leaf per column is pushed to `leaves`.
pub(super) fn body_tree(
    schema: &Schema,
    mapping: &MappingConfig,
    included: &[usize],
    leaves: &mut Vec<Leaf>,
) -> Result<Vec<Node>> {
    let mut body: Vec<Node> = Vec::new();
    let mut owners: HashMap<String, String> = HashMap::new();
    for &c in included {
        let name = schema.field(c).name();
        let (path, key) = match mapping.rename.get(name) {
            Some(p) => (p.clone(), format!("mapping.rename.{name}")),
            None => (name.clone(), format!("column `{name}`")),
        };
        if !mapping.rename.contains_key(name) && (path.contains('.') || path.starts_with('$')) {
            return Err(Error::config(
                key,
                "its name is not a valid MongoDB field name (it contains `.` or starts with `$`); \
                 give it another name with mapping.rename",
            ));
        }
        let segments: Vec<&str> = if mapping.rename.contains_key(name) {
            path.split('.').collect()
        } else {
            vec![path.as_str()]
        };
        if segments[0] == "_id" {
            return Err(Error::config(
                key,
                "`_id` is made from mapping.id; choose another field name",
            ));
        }
        claim_path(&mut owners, &segments, name, &key)?;
        leaves.push(Leaf {
            column: c,
            key: b::cstring_key(segments.last().expect("non-empty path")),
        });
        insert_path(&mut body, &segments[..segments.len() - 1], leaves.len() - 1);
    }
    Ok(body)
}

/// Every prefix of the path must be a document, the full path a leaf, and
/// no two columns may claim the same path.
fn claim_path(
    owners: &mut HashMap<String, String>,
    segments: &[&str],
    name: &str,
    key: &str,
) -> Result<()> {
    for depth in 1..=segments.len() {
        let prefix = segments[..depth].join(".");
        let value = depth == segments.len();
        match owners.get(&prefix) {
            Some(other) if value || !other.ends_with("(document)") => {
                return Err(Error::config(
                    key,
                    format!("field `{prefix}` is already written by {other}"),
                ))
            }
            Some(_) => {}
            None => {
                let who = match value {
                    true => format!("column `{name}`"),
                    false => format!("column `{name}` (document)"),
                };
                owners.insert(prefix, who);
            }
        }
    }
    Ok(())
}

fn insert_path(nodes: &mut Vec<Node>, parents: &[&str], leaf: usize) {
    let Some((first, rest)) = parents.split_first() else {
        nodes.push(Node::Leaf(leaf));
        return;
    };
    let key = b::cstring_key(first);
    let pos = nodes
        .iter()
        .position(|n| matches!(n, Node::Doc { key: k, .. } if *k == key));
    let pos = pos.unwrap_or_else(|| {
        nodes.push(Node::Doc {
            key,
            children: Vec::new(),
        });
        nodes.len() - 1
    });
    if let Node::Doc { children, .. } = &mut nodes[pos] {
        insert_path(children, rest, leaf);
    }
}
