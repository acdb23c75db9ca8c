//! Lab-wide rules: `apiVersion`, the lab's `name` and the libvirt name `prefix`.

use miette::LabeledSpan;

use super::Checker;
use crate::diag::Code;
use crate::lab::model::{self, LabName, NameError};
use crate::lab::spec::{LabSpec, Spanned};

/// Longest `prefix`: with a 63-character resource name a libvirt name stays under 100 characters.
pub const MAX_PREFIX: usize = 32;

/// Checks the top-level keys; returns the lab name (if valid) and the prefix every libvirt
/// name the lab owns starts with (`"<name>-"` by default).
pub(super) fn check(c: &mut Checker, spec: &LabSpec) -> (Option<LabName>, String) {
    let top = LabeledSpan::at((0, 0), "in this file");

    // apiVersion
    match &spec.api_version {
        None => c.push(
            Code::ApiVersion,
            "the lab file has no `apiVersion`",
            vec![top.clone()],
            format!("add `apiVersion: {}` as the first line", model::API_VERSION),
        ),
        Some(v) if v.value != model::API_VERSION => c.at(
            Code::ApiVersion,
            v,
            format!("unsupported apiVersion `{}`", v.value),
            "not supported by this topo",
            format!("this topo reads `apiVersion: {}` only", model::API_VERSION),
        ),
        Some(_) => {}
    }

    // name
    let lab_name = match &spec.name {
        None => {
            c.push(
                Code::Name,
                "the lab file has no `name`",
                vec![top],
                "add a lab name, e.g. `name: seedlab` (lowercase letters, digits and '-')",
            );
            None
        }
        Some(n) => checked_name(
            c,
            n,
            Code::Name,
            "lab name",
            "lowercase letters, digits and '-'",
            model::MAX_LAB_NAME,
            LabName::new,
        ),
    };

    // prefix
    let prefix = match (&spec.prefix, &lab_name) {
        (Some(p), _) => {
            let v = &p.value;
            if let Some(ch) =
                v.chars().find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == '-' || *ch == '_'))
            {
                c.at(
                    Code::Prefix,
                    p,
                    format!("prefix `{v}` contains {ch:?}, which is not allowed"),
                    "invalid character",
                    "a prefix uses lowercase letters, digits, '-' and '_' (it becomes part of libvirt names)",
                );
            } else if v.len() > MAX_PREFIX {
                c.at(
                    Code::Prefix,
                    p,
                    format!("prefix `{v}` is longer than {MAX_PREFIX} characters"),
                    "too long",
                    format!("shorten the prefix to at most {MAX_PREFIX} characters"),
                );
            } else if v.starts_with(['-', '_']) {
                c.at(
                    Code::Prefix,
                    p,
                    format!("prefix `{v}` starts with {:?}", v.chars().next().unwrap_or('-')),
                    "bad first character",
                    "start the prefix with a lowercase letter or digit, e.g. `lab1-`",
                );
            }
            v.clone()
        }
        (None, Some(n)) => format!("{n}-"),
        (None, None) => String::new(),
    };
    (lab_name, prefix)
}

/// The help line for a name that breaks its rule.
/// Parses the name at `at` with `parse` (a model newtype's constructor). An invalid name is
/// one problem with `code` at that name, saying which rule it breaks and how to fix it, and
/// gives `None`. `what` names the kind ("lab name"), `allowed` its characters, `max` its
/// length in characters.
pub(super) fn checked_name<T>(
    c: &mut Checker,
    at: &Spanned<String>,
    code: Code,
    what: &str,
    allowed: &str,
    max: usize,
    parse: impl FnOnce(&str) -> Result<T, NameError>,
) -> Option<T> {
    match parse(&at.value) {
        Ok(name) => Some(name),
        Err(e) => {
            c.at(
                code,
                at,
                format!("{what} `{}` {e}", at.value),
                format!("invalid {what}"),
                name_help(what, &e, allowed, max),
            );
            None
        }
    }
}

fn name_help(what: &str, err: &NameError, allowed: &str, max: usize) -> String {
    match err {
        NameError::TooLong { .. } => format!("shorten the {what} to at most {max} characters"),
        _ => format!(
            "a {what} uses {allowed}, starts with a lowercase letter, does not end with '-' and has at most {max} characters"
        ),
    }
}
