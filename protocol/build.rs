//! Compiles `schemas/v*.bare` into Rust.
//!
//! The schemas are the single source of truth. For every version this emits one
//! module of plain Rust types with `Encode`/`Decode` implementations written
//! against `crate::bare` (our bounded BARE codec). A struct, enum or union whose
//! definition is identical (deeply) in the next version is not emitted again:
//! the module re-exports the next version's type, so identical types are one
//! Rust type with one codec across versions (no conversion code between them,
//! and each codec once in the `.wasm`). Types that differ are converted by hand
//! in `src/versioned/`, where every match is exhaustive — except between the
//! versions in [`GENERATED_CONVERSIONS`], where this also emits the conversions
//! that need no decision (see there).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

const VERSIONS: &[u16] = &[1, 2, 3, 4, 5, 6];

/// Version pairs `(a, a + 1)` whose conversions are generated into
/// `OUT_DIR/conv_v{a}_v{a+1}.rs` (included by `src/versioned/v{a}_v{a+1}.rs`),
/// with the types whose downgrade is written by hand there.
///
/// For every type of `a` that is not shared with `a + 1`, this emits
/// `<type>_up(x: va::T) -> vb::T` (a struct with the same fields, an enum or
/// union whose values or members in `a` are a prefix of those in `a + 1`) and,
/// unless the type is listed, `<type>_down(x: vb::T, t: u16) -> va::T` (same
/// fields, same values or members; `t` is the version finally targeted). A
/// downgrade that needs a decision (an enum that gained values, a message to
/// rewrite) must be listed and written by hand: a type that gained values but
/// is not listed stops the build, as does a listed type that is shared or gone.
/// Generated downgrades cannot fail: a pair listed here only adds values that
/// downgrade to an older meaning (v6), never members that are gated.
///
/// Such a pair only appends enum values (the generator checks it), so a frame
/// of version `a` is read with `a + 1`'s types: their decoders refuse a value
/// appended after the version being read ([`first_versions`]), and the older
/// version needs no decoder of its own in the client (`decode_to_envoy`).
const GENERATED_CONVERSIONS: &[(u16, &[&str])] = &[(
    5,
    &[
        "StopReason",
        "ActorErrorCode",
        "KvErrorCode",
        "SqliteErrorCode",
        "GetOrCreateActorError",
        "KvErrorResponse",
        "SqliteError",
    ],
)];

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    let mut schemas = Vec::new();
    for v in VERSIONS {
        let path = format!("schemas/v{v}.bare");
        println!("cargo:rerun-if-changed={path}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let schema = parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        check(&schema).unwrap_or_else(|e| panic!("{path}: {e}"));
        schemas.push(schema);
    }
    for (i, v) in VERSIONS.iter().enumerate() {
        // A struct, enum or union whose definition is identical (deeply) in the
        // next version is that version's type, re-exported: one Rust type, one
        // codec, and no conversion code between the two (the .wasm carries each
        // codec once instead of once per version).
        let shared = match schemas.get(i + 1) {
            Some(next) => shared_with_next(&schemas[i], next),
            None => BTreeMap::new(),
        };
        let code = generate(&schemas[i], *v, &shared, &first_versions(&schemas, i));
        std::fs::write(Path::new(&out_dir).join(format!("v{v}.rs")), code).unwrap();
        if let Some((_, by_hand)) = GENERATED_CONVERSIONS.iter().find(|(a, _)| a == v) {
            let next = schemas.get(i + 1).unwrap_or_else(|| panic!("conversions of v{v}: no v{}", v + 1));
            let code = generate_conversions(&schemas[i], next, *v, &shared, by_hand)
                .unwrap_or_else(|e| panic!("conversions v{v} <-> v{}: {e}", v + 1));
            std::fs::write(Path::new(&out_dir).join(format!("conv_v{v}_v{}.rs", v + 1)), code).unwrap();
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The named types (structs, enums, unions) of `a` identical in `b`, all the
/// way down: `a`'s module re-exports them from `b`'s.
fn shared_with_next(a: &Schema, b: &Schema) -> BTreeMap<String, bool> {
    let mut memo = BTreeMap::new();
    let mut shared = BTreeMap::new();
    for name in &a.order {
        if !matches!(a.types[name].def, Def::Alias(_)) && identical(a, b, name, &mut memo) {
            shared.insert(name.clone(), true);
        }
    }
    shared
}

// ------------------------------------------------------------------ model

#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Prim(&'static str),
    Str,
    Data,
    Void,
    Optional(Box<Ty>),
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    Named(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Def {
    Struct(Vec<Field>),
    Enum(Vec<String>),
    Union(Vec<String>),
    Alias(Ty),
}

#[derive(Clone, Debug, PartialEq)]
struct Field {
    name: String,
    ty: Ty,
    doc: Vec<String>,
}

#[derive(Clone, Debug)]
struct TypeDef {
    #[allow(dead_code)] // kept for debugging output of the parsed schema
    name: String,
    def: Def,
    doc: Vec<String>,
}

struct Schema {
    order: Vec<String>,
    types: HashMap<String, TypeDef>,
}

// ------------------------------------------------------------------ lexer + parser

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Sym(char),
    /// A comment line: text after `#`.
    Doc(String),
    /// An empty line, which ends a doc comment.
    Blank,
}

fn lex(text: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            toks.push(Tok::Blank);
            continue;
        }
        let (code, comment) = match line.find('#') {
            Some(i) => (&line[..i], Some(line[i + 1..].trim().to_string())),
            None => (line, None),
        };
        if let Some(c) = comment {
            if code.trim().is_empty() {
                toks.push(Tok::Doc(c));
            }
        }
        let mut chars = code.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
            } else if c.is_ascii_alphanumeric() || c == '_' {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        s.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                toks.push(Tok::Ident(s));
            } else {
                toks.push(Tok::Sym(c));
                chars.next();
            }
        }
    }
    toks
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    doc: Vec<String>,
}

impl Parser {
    /// Next significant token; collects doc comments on the way.
    fn next(&mut self) -> Option<Tok> {
        while let Some(t) = self.toks.get(self.pos).cloned() {
            self.pos += 1;
            match t {
                Tok::Doc(d) => self.doc.push(d),
                Tok::Blank => self.doc.clear(),
                t => return Some(t),
            }
        }
        None
    }
    fn peek(&mut self) -> Option<Tok> {
        let save = (self.pos, self.doc.clone());
        let t = self.next();
        self.pos = save.0;
        self.doc = save.1;
        t
    }
    fn take_doc(&mut self) -> Vec<String> {
        std::mem::take(&mut self.doc)
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            t => Err(format!("expected identifier, found {t:?}")),
        }
    }
    fn sym(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Some(Tok::Sym(s)) if s == c => Ok(()),
            t => Err(format!("expected '{c}', found {t:?}")),
        }
    }
    fn ty(&mut self) -> Result<Ty, String> {
        let name = self.ident()?;
        Ok(match name.as_str() {
            "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" | "f32" | "f64" | "bool" | "uint" | "int" => {
                Ty::Prim(match name.as_str() {
                    "u8" => "u8",
                    "u16" => "u16",
                    "u32" => "u32",
                    "u64" => "u64",
                    "i8" => "i8",
                    "i16" => "i16",
                    "i32" => "i32",
                    "i64" => "i64",
                    "f32" => "f32",
                    "f64" => "f64",
                    "bool" => "bool",
                    "uint" => "uint",
                    _ => "int",
                })
            }
            "str" => Ty::Str,
            "data" => Ty::Data,
            "void" => Ty::Void,
            "optional" => {
                self.sym('<')?;
                let t = self.ty()?;
                self.sym('>')?;
                Ty::Optional(Box::new(t))
            }
            "list" => {
                self.sym('<')?;
                let t = self.ty()?;
                self.sym('>')?;
                Ty::List(Box::new(t))
            }
            "map" => {
                self.sym('<')?;
                let k = self.ty()?;
                self.sym('>')?;
                self.sym('<')?;
                let v = self.ty()?;
                self.sym('>')?;
                Ty::Map(Box::new(k), Box::new(v))
            }
            _ => Ty::Named(name),
        })
    }
}

fn parse(text: &str) -> Result<Schema, String> {
    let mut p = Parser { toks: lex(text), pos: 0, doc: Vec::new() };
    let mut schema = Schema { order: Vec::new(), types: HashMap::new() };
    while p.peek().is_some() {
        let kw = p.ident()?;
        if kw != "type" {
            return Err(format!("expected 'type', found {kw}"));
        }
        let doc = p.take_doc();
        let name = p.ident()?;
        let def = match p.peek() {
            Some(Tok::Ident(k)) if k == "struct" => {
                p.next();
                p.sym('{')?;
                let mut fields = Vec::new();
                loop {
                    if p.peek() == Some(Tok::Sym('}')) {
                        p.next();
                        break;
                    }
                    let fname = p.ident()?;
                    let fdoc = p.take_doc();
                    p.sym(':')?;
                    let ty = p.ty()?;
                    fields.push(Field { name: fname, ty, doc: fdoc });
                }
                if fields.is_empty() {
                    return Err(format!("struct {name} has no fields"));
                }
                Def::Struct(fields)
            }
            Some(Tok::Ident(k)) if k == "enum" => {
                p.next();
                p.sym('{')?;
                let mut values = Vec::new();
                loop {
                    match p.next() {
                        Some(Tok::Sym('}')) => break,
                        Some(Tok::Ident(v)) => values.push(v),
                        t => return Err(format!("enum {name}: unexpected {t:?}")),
                    }
                }
                p.take_doc();
                Def::Enum(values)
            }
            Some(Tok::Ident(k)) if k == "union" => {
                p.next();
                p.sym('{')?;
                let mut members = Vec::new();
                loop {
                    match p.next() {
                        Some(Tok::Sym('}')) => break,
                        Some(Tok::Sym('|')) => {}
                        Some(Tok::Ident(v)) => members.push(v),
                        t => return Err(format!("union {name}: unexpected {t:?}")),
                    }
                }
                p.take_doc();
                Def::Union(members)
            }
            _ => Def::Alias(p.ty()?),
        };
        if schema.types.contains_key(&name) {
            return Err(format!("type {name} defined twice"));
        }
        schema.order.push(name.clone());
        schema.types.insert(name.clone(), TypeDef { name, def, doc });
    }
    Ok(schema)
}

/// Rejects schemas this generator does not support, so generated code is
/// always well formed.
fn check(s: &Schema) -> Result<(), String> {
    fn check_ty(s: &Schema, t: &Ty, ctx: &str) -> Result<(), String> {
        match t {
            Ty::Void => Err(format!("{ctx}: void is only allowed as a union member")),
            Ty::Named(n) => match s.types.get(n) {
                None => Err(format!("{ctx}: unknown type {n}")),
                Some(TypeDef { def: Def::Alias(Ty::Void), .. }) => {
                    Err(format!("{ctx}: void type {n} used outside a union"))
                }
                Some(_) => Ok(()),
            },
            Ty::Optional(t) | Ty::List(t) => check_ty(s, t, ctx),
            Ty::Map(k, v) => {
                if !matches!(**k, Ty::Str) {
                    return Err(format!("{ctx}: only map<str><_> is supported"));
                }
                check_ty(s, v, ctx)
            }
            Ty::Prim("uint") | Ty::Prim("int") => Err(format!("{ctx}: use fixed-width integers")),
            _ => Ok(()),
        }
    }
    // Every type is defined before it is used, as a strict BARE compiler
    // (one pass over the text) requires.
    let mut defined = std::collections::HashSet::new();
    for name in &s.order {
        let mut refs = Vec::new();
        collect_refs(&s.types[name].def, &mut refs);
        if let Some(r) = refs.iter().find(|r| !defined.contains(r.as_str())) {
            return Err(format!("type {name} uses {r} before its definition"));
        }
        defined.insert(name.as_str());
    }
    for name in &s.order {
        let t = &s.types[name];
        match &t.def {
            Def::Struct(fields) => {
                for f in fields {
                    check_ty(s, &f.ty, &format!("{name}.{}", f.name))?;
                }
            }
            Def::Union(members) => {
                for m in members {
                    if !s.types.contains_key(m) {
                        return Err(format!("union {name}: unknown member {m}"));
                    }
                }
            }
            Def::Enum(v) if v.is_empty() => return Err(format!("enum {name} is empty")),
            Def::Enum(_) => {}
            Def::Alias(Ty::Void) => {}
            Def::Alias(t) => check_ty(s, t, name)?,
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ naming

fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn pascal_from_screaming(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let lower = p.to_ascii_lowercase();
            let mut c = lower.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// `ToEngineMetadata` in union `ToEngine` becomes variant `Metadata`.
fn variant_name(union: &str, member: &str) -> String {
    if let Some(rest) = member.strip_prefix(union) {
        if rest.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            return rest.to_string();
        }
    }
    member.to_string()
}

// ------------------------------------------------------------------ rust types

fn resolve<'a>(s: &'a Schema, t: &'a Ty) -> &'a Ty {
    match t {
        Ty::Named(n) => match &s.types[n].def {
            Def::Alias(inner) => resolve(s, inner),
            _ => t,
        },
        _ => t,
    }
}

fn rust_ty(t: &Ty) -> String {
    match t {
        Ty::Prim(p) => p.to_string(),
        Ty::Str => "String".into(),
        Ty::Data => "Vec<u8>".into(),
        Ty::Void => "()".into(),
        Ty::Optional(t) => format!("Option<{}>", rust_ty(t)),
        Ty::List(t) => format!("Vec<{}>", rust_ty(t)),
        Ty::Map(k, v) => format!("std::collections::BTreeMap<{}, {}>", rust_ty(k), rust_ty(v)),
        Ty::Named(n) => n.clone(),
    }
}

/// Code that writes `expr` (a reference) of type `t` into `out`.
fn enc(s: &Schema, t: &Ty, expr: &str, depth: usize) -> String {
    let v = format!("v{depth}");
    match resolve(s, t) {
        Ty::Prim(p) => format!("bare::write_{p}(out, *{expr});"),
        Ty::Str => format!("bare::write_str(out, {expr});"),
        Ty::Data => format!("bare::write_data(out, {expr});"),
        Ty::Void => String::new(),
        Ty::Optional(inner) => format!(
            "match {expr} {{ None => out.push(0), Some({v}) => {{ out.push(1); {} }} }}",
            enc(s, inner, &v, depth + 1)
        ),
        Ty::List(inner) => format!(
            "bare::write_len(out, ({expr}).len()); for {v} in ({expr}).iter() {{ {} }}",
            enc(s, inner, &v, depth + 1)
        ),
        Ty::Map(k, val) => format!(
            "bare::write_len(out, ({expr}).len()); for ({v}k, {v}v) in ({expr}).iter() {{ {} {} }}",
            enc(s, k, &format!("{v}k"), depth + 1),
            enc(s, val, &format!("{v}v"), depth + 1)
        ),
        Ty::Named(_) => format!("bare::Encode::encode({expr}, out);"),
    }
}

/// An expression of type `Result<T, bare::DecodeError>` reading `t` from `r`.
fn dec(s: &Schema, t: &Ty) -> String {
    match resolve(s, t) {
        Ty::Prim(p) => format!("r.read_{p}()"),
        Ty::Str => "r.read_str()".into(),
        Ty::Data => "r.read_data()".into(),
        Ty::Void => "Ok(())".into(),
        Ty::Optional(inner) => format!(
            "(|| -> Result<_, bare::DecodeError> {{ Ok(if r.read_optional_tag()? {{ Some({}?) }} else {{ None }}) }})()",
            dec(s, inner)
        ),
        Ty::List(inner) => {
            let elem = rust_ty(resolve(s, inner));
            format!(
                "(|| -> Result<_, bare::DecodeError> {{ let n = r.read_len::<{elem}>()?; let mut out: Vec<{elem}> = Vec::with_capacity(n); \
                 for i in 0..n {{ out.push(r.within_index(i, |r| {})?); }} Ok(out) }})()",
                dec(s, inner)
            )
        }
        Ty::Map(_, val) => {
            let vt = rust_ty(resolve(s, val));
            format!(
                "(|| -> Result<_, bare::DecodeError> {{ let n = r.read_map_len::<(String, {vt})>()?; let mut out = std::collections::BTreeMap::new(); \
                 for _ in 0..n {{ let k = r.read_str()?; let v: {vt} = {}?; r.insert_unique(&mut out, k, v)?; }} Ok(out) }})()",
                dec(s, val)
            )
        }
        Ty::Named(n) => format!("<{n} as bare::Decode>::decode(r)"),
    }
}

fn doc_lines(out: &mut String, doc: &[String], indent: &str) {
    for d in doc {
        let _ = writeln!(out, "{indent}/// {d}");
    }
}

const DERIVE: &str = "#[derive(Debug, Clone, PartialEq)]\n\
#[cfg_attr(feature = \"serde\", derive(serde::Serialize, serde::Deserialize))]\n\
#[cfg_attr(feature = \"arbitrary\", derive(proptest_derive::Arbitrary))]\n";

/// For each enum and union that version `VERSIONS[i]` defines: the first
/// version that carries each of its values, going back only through the pairs
/// of [`GENERATED_CONVERSIONS`] (append-only). A value present since the
/// oldest version of that run needs no check: older frames are read with older
/// types.
fn first_versions(schemas: &[Schema], i: usize) -> BTreeMap<String, Vec<u16>> {
    let mut out = BTreeMap::new();
    for (name, t) in &schemas[i].types {
        let (Def::Enum(values) | Def::Union(values)) = &t.def else { continue };
        let mut first = vec![VERSIONS[i]; values.len()];
        let mut j = i;
        while j > 0 && GENERATED_CONVERSIONS.iter().any(|(a, _)| *a == VERSIONS[j - 1]) {
            let older = match schemas[j - 1].types.get(name).map(|t| &t.def) {
                Some(Def::Enum(v) | Def::Union(v)) if values.starts_with(v) => v.len(),
                _ => break,
            };
            first[..older].fill(VERSIONS[j - 1]);
            j -= 1;
        }
        if first.iter().any(|f| *f != first[0]) {
            out.insert(name.clone(), first);
        }
    }
    out
}

/// The guard of a decoder's match arm for value `i` of `name`: a value newer
/// than the version being read is unknown there (see [`first_versions`]).
fn version_guard(first: &BTreeMap<String, Vec<u16>>, name: &str, i: usize) -> String {
    match first.get(name) {
        Some(f) if f[i] > f[0] => format!(" if r.version() >= {}", f[i]),
        _ => String::new(),
    }
}

fn generate(s: &Schema, version: u16, shared: &BTreeMap<String, bool>, first: &BTreeMap<String, Vec<u16>>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "// Generated by build.rs from schemas/v{version}.bare. Do not edit.");
    let _ = writeln!(out, "#[allow(unused_imports)] use crate::bare;");
    let _ = writeln!(out, "/// The protocol version these types belong to.");
    let _ = writeln!(out, "pub const VERSION: u16 = {version};");
    for name in &s.order {
        let t = &s.types[name];
        if shared.contains_key(name) {
            doc_lines(&mut out, &t.doc, "");
            let _ = writeln!(out, "/// (Identical in v{}: the same type.)", version + 1);
            let _ = writeln!(out, "pub use crate::v{}::{name};", version + 1);
            continue;
        }
        match &t.def {
            Def::Alias(Ty::Void) => {} // only ever a unit variant of a union
            Def::Alias(inner) => {
                doc_lines(&mut out, &t.doc, "");
                let _ = writeln!(out, "pub type {name} = {};", rust_ty(inner));
            }
            Def::Struct(fields) => {
                doc_lines(&mut out, &t.doc, "");
                out.push_str(DERIVE);
                let _ = writeln!(out, "pub struct {name} {{");
                for f in fields {
                    doc_lines(&mut out, &f.doc, "    ");
                    if matches!(resolve(s, &f.ty), Ty::Prim("f64") | Ty::Prim("f32")) {
                        let _ = writeln!(
                            out,
                            "    #[cfg_attr(feature = \"arbitrary\", proptest(strategy = \"crate::arbitrary::any_{}()\"))]",
                            rust_ty(resolve(s, &f.ty))
                        );
                    }
                    let _ = writeln!(out, "    pub {}: {},", snake(&f.name), rust_ty(&f.ty));
                }
                let _ = writeln!(out, "}}");
                let _ = writeln!(out, "impl bare::Encode for {name} {{\n    fn encode(&self, out: &mut Vec<u8>) {{");
                for f in fields {
                    let _ = writeln!(out, "        {}", enc(s, &f.ty, &format!("&self.{}", snake(&f.name)), 0));
                }
                let _ = writeln!(out, "    }}\n}}");
                let _ = writeln!(
                    out,
                    "impl bare::Decode for {name} {{\n    fn decode(r: &mut bare::Reader<'_>) -> Result<Self, bare::DecodeError> {{"
                );
                let _ = writeln!(out, "        Ok(Self {{");
                for f in fields {
                    let _ = writeln!(
                        out,
                        "            {}: r.within({:?}, |r| {})?,",
                        snake(&f.name),
                        f.name,
                        dec(s, &f.ty)
                    );
                }
                let _ = writeln!(out, "        }})\n    }}\n}}");
            }
            Def::Enum(values) => {
                doc_lines(&mut out, &t.doc, "");
                out.push_str("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n");
                out.push_str("#[cfg_attr(feature = \"serde\", derive(serde::Serialize, serde::Deserialize))]\n");
                out.push_str("#[cfg_attr(feature = \"arbitrary\", derive(proptest_derive::Arbitrary))]\n");
                let _ = writeln!(out, "pub enum {name} {{");
                for v in values {
                    let _ = writeln!(out, "    /// Wire name `{v}`.\n    {},", pascal_from_screaming(v));
                }
                let _ = writeln!(out, "}}");
                let _ = writeln!(out, "impl {name} {{\n    /// Every value, in wire order.\n    pub const ALL: &'static [{name}] = &[{}];", values.iter().map(|v| format!("{name}::{}", pascal_from_screaming(v))).collect::<Vec<_>>().join(", "));
                let _ = writeln!(out, "    /// The name used in the schema.\n    pub fn wire_name(self) -> &'static str {{ match self {{ {} }} }}\n}}", values.iter().map(|v| format!("{name}::{} => {v:?}", pascal_from_screaming(v))).collect::<Vec<_>>().join(", "));
                let _ = writeln!(out, "impl bare::Encode for {name} {{\n    fn encode(&self, out: &mut Vec<u8>) {{\n        let tag: u64 = match self {{");
                for (i, v) in values.iter().enumerate() {
                    let _ = writeln!(out, "            {name}::{} => {i},", pascal_from_screaming(v));
                }
                let _ = writeln!(out, "        }};\n        bare::write_uint(out, tag);\n    }}\n}}");
                let _ = writeln!(out, "impl bare::Decode for {name} {{\n    fn decode(r: &mut bare::Reader<'_>) -> Result<Self, bare::DecodeError> {{");
                let _ = writeln!(out, "        let at = r.offset();\n        match r.read_uint()? {{");
                for (i, v) in values.iter().enumerate() {
                    let guard = version_guard(first, name, i);
                    let _ = writeln!(out, "            {i}{guard} => Ok({name}::{}),", pascal_from_screaming(v));
                }
                let _ = writeln!(out, "            other => Err(r.error_at(at, bare::DecodeErrorKind::UnknownEnumValue {{ ty: {name:?}, value: other }})),");
                let _ = writeln!(out, "        }}\n    }}\n}}");
            }
            Def::Union(members) => {
                doc_lines(&mut out, &t.doc, "");
                out.push_str(DERIVE);
                let _ = writeln!(out, "pub enum {name} {{");
                for m in members {
                    let mt = &s.types[m];
                    doc_lines(&mut out, &mt.doc, "    ");
                    let vn = variant_name(name, m);
                    match &mt.def {
                        Def::Alias(Ty::Void) => {
                            let _ = writeln!(out, "    {vn},");
                        }
                        _ => {
                            if matches!(resolve(s, &Ty::Named(m.clone())), Ty::Prim("f64")) {
                                let _ = writeln!(out, "    #[cfg_attr(feature = \"arbitrary\", proptest(strategy = \"proptest::strategy::Strategy::prop_map(crate::arbitrary::any_f64(), {name}::{vn})\"))]");
                            }
                            let _ = writeln!(out, "    {vn}({m}),");
                        }
                    }
                }
                let _ = writeln!(out, "}}");
                // The schema name of each member, for error messages and tests.
                let _ = writeln!(out, "impl {name} {{\n    /// Schema name of this value's member type.\n    pub fn member_name(&self) -> &'static str {{\n        match self {{");
                for m in members {
                    let vn = variant_name(name, m);
                    let pat =
                        if matches!(s.types[m].def, Def::Alias(Ty::Void)) { vn.clone() } else { format!("{vn}(_)") };
                    let _ = writeln!(out, "            {name}::{pat} => {m:?},");
                }
                let _ = writeln!(out, "        }}\n    }}\n    /// Schema names of every member, in tag order.\n    pub const MEMBERS: &'static [&'static str] = &[{}];\n}}", members.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", "));
                let _ = writeln!(out, "impl bare::Encode for {name} {{\n    fn encode(&self, out: &mut Vec<u8>) {{\n        match self {{");
                for (i, m) in members.iter().enumerate() {
                    let vn = variant_name(name, m);
                    if matches!(s.types[m].def, Def::Alias(Ty::Void)) {
                        let _ = writeln!(out, "            {name}::{vn} => bare::write_uint(out, {i}),");
                    } else {
                        let _ = writeln!(
                            out,
                            "            {name}::{vn}(v) => {{ bare::write_uint(out, {i}); {} }}",
                            enc(s, &Ty::Named(m.clone()), "v", 1)
                        );
                    }
                }
                let _ = writeln!(out, "        }}\n    }}\n}}");
                let _ = writeln!(out, "impl bare::Decode for {name} {{\n    fn decode(r: &mut bare::Reader<'_>) -> Result<Self, bare::DecodeError> {{");
                let _ = writeln!(out, "        let at = r.offset();\n        match r.read_uint()? {{");
                for (i, m) in members.iter().enumerate() {
                    let vn = variant_name(name, m);
                    let guard = version_guard(first, name, i);
                    if matches!(s.types[m].def, Def::Alias(Ty::Void)) {
                        let _ = writeln!(out, "            {i}{guard} => Ok({name}::{vn}),");
                    } else {
                        let _ = writeln!(
                            out,
                            "            {i}{guard} => Ok({name}::{vn}(r.within({m:?}, |r| {})?)),",
                            dec(s, &Ty::Named(m.clone()))
                        );
                    }
                }
                let _ = writeln!(out, "            other => Err(r.error_at(at, bare::DecodeErrorKind::UnknownUnionTag {{ ty: {name:?}, tag: other }})),");
                let _ = writeln!(out, "        }}\n    }}\n}}");
            }
        }
    }
    out
}

// ------------------------------------------------------------------ sharing between versions

/// Whether `name` has the same definition in both schemas, all the way down.
fn identical(a: &Schema, b: &Schema, name: &str, memo: &mut BTreeMap<String, bool>) -> bool {
    if let Some(&r) = memo.get(name) {
        return r;
    }
    memo.insert(name.to_string(), true); // schemas are not recursive; guards anyway
    let r = match (a.types.get(name), b.types.get(name)) {
        (Some(x), Some(y)) if x.def == y.def => {
            let mut refs = Vec::new();
            collect_refs(&x.def, &mut refs);
            refs.iter().all(|n| identical(a, b, n, memo))
        }
        _ => false,
    };
    memo.insert(name.to_string(), r);
    r
}

fn collect_refs(d: &Def, out: &mut Vec<String>) {
    fn ty_refs(t: &Ty, out: &mut Vec<String>) {
        match t {
            Ty::Named(n) => out.push(n.clone()),
            Ty::Optional(t) | Ty::List(t) => ty_refs(t, out),
            Ty::Map(k, v) => {
                ty_refs(k, out);
                ty_refs(v, out);
            }
            _ => {}
        }
    }
    match d {
        Def::Struct(fs) => fs.iter().for_each(|f| ty_refs(&f.ty, out)),
        Def::Union(ms) => out.extend(ms.iter().cloned()),
        Def::Enum(_) => {}
        Def::Alias(t) => ty_refs(t, out),
    }
}

// ------------------------------------------------------------------ conversions between versions

/// Whether a value of type `t` (in schema `s`) differs between the two
/// versions, so it needs a conversion call rather than a move.
fn needs_conversion(s: &Schema, shared: &BTreeMap<String, bool>, t: &Ty) -> bool {
    match t {
        Ty::Named(n) => match &s.types[n].def {
            Def::Alias(inner) => needs_conversion(s, shared, inner),
            _ => !shared.contains_key(n),
        },
        Ty::Optional(t) | Ty::List(t) => needs_conversion(s, shared, t),
        Ty::Map(_, v) => needs_conversion(s, shared, v),
        _ => false,
    }
}

/// An expression converting `expr` (of type `t`, moved) up or down.
fn convert_expr(s: &Schema, shared: &BTreeMap<String, bool>, t: &Ty, expr: &str, down: bool, depth: usize) -> String {
    if !needs_conversion(s, shared, t) {
        return expr.to_string();
    }
    let v = format!("v{depth}");
    match t {
        Ty::Named(n) => match &s.types[n].def {
            Def::Alias(inner) => convert_expr(s, shared, inner, expr, down, depth),
            _ if down => format!("{}_down({expr}, t)", snake(n)),
            _ => format!("{}_up({expr})", snake(n)),
        },
        Ty::Optional(inner) => {
            format!("{expr}.map(|{v}| {})", convert_expr(s, shared, inner, &v, down, depth + 1))
        }
        Ty::List(inner) => {
            format!("{expr}.into_iter().map(|{v}| {}).collect()", convert_expr(s, shared, inner, &v, down, depth + 1))
        }
        Ty::Map(_, val) => format!(
            "{expr}.into_iter().map(|({v}k, {v})| ({v}k, {})).collect()",
            convert_expr(s, shared, val, &v, down, depth + 1)
        ),
        _ => unreachable!("primitives never need a conversion"),
    }
}

/// The conversions between versions `va` and `va + 1` (see
/// [`GENERATED_CONVERSIONS`]). `shared` holds the types of `a` that are `b`'s.
fn generate_conversions(
    a: &Schema,
    b: &Schema,
    va: u16,
    shared: &BTreeMap<String, bool>,
    by_hand: &[&str],
) -> Result<String, String> {
    let vb = va + 1;
    let (ma, mb) = (format!("v{va}"), format!("v{vb}"));
    for name in by_hand {
        match a.types.get(*name) {
            None => return Err(format!("{name} is listed as converted by hand but v{va} has no such type")),
            Some(_) if shared.contains_key(*name) => {
                return Err(format!("{name} is listed as converted by hand but is the same type in v{va} and v{vb}"))
            }
            Some(_) => {}
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "// Generated by build.rs from schemas/v{va}.bare and v{vb}.bare. Do not edit.");
    for name in &a.order {
        let ta = &a.types[name];
        if shared.contains_key(name) || matches!(ta.def, Def::Alias(_)) {
            continue;
        }
        let tb = b.types.get(name).ok_or_else(|| format!("v{vb} has no type {name}"))?;
        let f = snake(name);
        let write_down = !by_hand.contains(&name.as_str());
        match (&ta.def, &tb.def) {
            (Def::Struct(fa), Def::Struct(fb)) => {
                if fa != fb {
                    return Err(format!("struct {name} has other fields in v{vb}: convert it by hand"));
                }
                for (down, (from, to)) in [(false, (&ma, &mb)), (true, (&mb, &ma))] {
                    if down && !write_down {
                        continue;
                    }
                    let (suffix, param) = if down { ("down", ", t: u16") } else { ("up", "") };
                    let _ = writeln!(out, "pub(super) fn {f}_{suffix}(x: {from}::{name}{param}) -> {to}::{name} {{");
                    let _ = writeln!(out, "    {to}::{name} {{");
                    for field in fa {
                        let fname = snake(&field.name);
                        let e = convert_expr(a, shared, &field.ty, &format!("x.{fname}"), down, 0);
                        let _ = writeln!(out, "        {fname}: {e},");
                    }
                    let _ = writeln!(out, "    }}\n}}");
                }
            }
            (Def::Enum(va_values), Def::Enum(vb_values)) => {
                if !vb_values.starts_with(va_values) {
                    return Err(format!("enum {name}: v{va}'s values are not a prefix of v{vb}'s"));
                }
                if write_down && va_values != vb_values {
                    return Err(format!("enum {name} gained values in v{vb}: list it and convert it down by hand"));
                }
                for (down, (from, to)) in [(false, (&ma, &mb)), (true, (&mb, &ma))] {
                    if down && !write_down {
                        continue;
                    }
                    let (suffix, param) = if down { ("down", ", _t: u16") } else { ("up", "") };
                    let _ = writeln!(out, "pub(super) fn {f}_{suffix}(x: {from}::{name}{param}) -> {to}::{name} {{");
                    let _ = writeln!(out, "    match x {{");
                    for value in va_values {
                        let p = pascal_from_screaming(value);
                        let _ = writeln!(out, "        {from}::{name}::{p} => {to}::{name}::{p},");
                    }
                    let _ = writeln!(out, "    }}\n}}");
                }
            }
            (Def::Union(va_members), Def::Union(vb_members)) => {
                if !vb_members.starts_with(va_members) {
                    return Err(format!("union {name}: v{va}'s members are not a prefix of v{vb}'s"));
                }
                if write_down && va_members != vb_members {
                    return Err(format!("union {name} gained members in v{vb}: list it and convert it down by hand"));
                }
                for (down, (from, to)) in [(false, (&ma, &mb)), (true, (&mb, &ma))] {
                    if down && !write_down {
                        continue;
                    }
                    let (suffix, param) = if down { ("down", ", t: u16") } else { ("up", "") };
                    // `t` is unused when no member needs converting.
                    let uses_t = va_members.iter().any(|m| needs_conversion(a, shared, &Ty::Named(m.clone())));
                    let param = if down && !uses_t { ", _t: u16" } else { param };
                    let _ = writeln!(out, "pub(super) fn {f}_{suffix}(x: {from}::{name}{param}) -> {to}::{name} {{");
                    let _ = writeln!(out, "    match x {{");
                    for m in va_members {
                        let vn = variant_name(name, m);
                        if matches!(a.types[m].def, Def::Alias(Ty::Void)) {
                            let _ = writeln!(out, "        {from}::{name}::{vn} => {to}::{name}::{vn},");
                        } else {
                            let e = convert_expr(a, shared, &Ty::Named(m.clone()), "v", down, 0);
                            let _ = writeln!(out, "        {from}::{name}::{vn}(v) => {to}::{name}::{vn}({e}),");
                        }
                    }
                    let _ = writeln!(out, "    }}\n}}");
                }
            }
            _ => return Err(format!("{name} is another kind of type in v{vb}")),
        }
    }
    Ok(out)
}
