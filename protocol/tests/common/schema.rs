//! A second, independent reading of the `.bare` schema files, used to check
//! the golden vectors against the schema text itself rather than against the
//! generated code: it parses the schema, walks a vector's bytes type by type,
//! and records which member of which union each tag selected. The coverage
//! test uses that to prove every union member of every version has a vector.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    /// A fixed-width primitive of this many bytes (u8..u64, i8..i64, f32, f64).
    Fixed(usize),
    Bool,
    /// LEB128 `uint`; `int` is zig-zag over the same encoding.
    Varint,
    Str,
    Data,
    Void,
    List(Box<Ty>),
    Optional(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    Named(String),
    Struct(Vec<(String, Ty)>),
    Union(Vec<String>),
    Enum(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Schema {
    pub types: BTreeMap<String, Ty>,
}

fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut word = String::new();
        for c in line.chars() {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            if "{}|:<>".contains(c) {
                out.push(c.to_string());
            } else {
                assert!(c.is_whitespace(), "unexpected character {c:?} in schema");
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
    }
    out
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> String {
        let t = self.tokens.get(self.pos).cloned().unwrap_or_else(|| panic!("schema ends early"));
        self.pos += 1;
        t
    }
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }
    fn expect(&mut self, s: &str) {
        let t = self.next();
        assert_eq!(t, s, "schema: expected {s:?}");
    }
    fn ty(&mut self) -> Ty {
        let t = self.next();
        match t.as_str() {
            "u8" | "i8" => Ty::Fixed(1),
            "u16" | "i16" => Ty::Fixed(2),
            "u32" | "i32" | "f32" => Ty::Fixed(4),
            "u64" | "i64" | "f64" => Ty::Fixed(8),
            "uint" | "int" => Ty::Varint,
            "bool" => Ty::Bool,
            "str" => Ty::Str,
            "data" => Ty::Data,
            "void" => Ty::Void,
            "list" | "optional" => {
                self.expect("<");
                let inner = Box::new(self.ty());
                self.expect(">");
                if t == "list" {
                    Ty::List(inner)
                } else {
                    Ty::Optional(inner)
                }
            }
            "map" => {
                self.expect("<");
                let k = Box::new(self.ty());
                self.expect(">");
                self.expect("<");
                let v = Box::new(self.ty());
                self.expect(">");
                Ty::Map(k, v)
            }
            "struct" => {
                self.expect("{");
                let mut fields = Vec::new();
                while self.peek() != Some("}") {
                    let name = self.next();
                    self.expect(":");
                    fields.push((name, self.ty()));
                }
                self.expect("}");
                Ty::Struct(fields)
            }
            "union" => {
                self.expect("{");
                let mut members = vec![self.next()];
                while self.peek() == Some("|") {
                    self.expect("|");
                    members.push(self.next());
                }
                self.expect("}");
                Ty::Union(members)
            }
            "enum" => {
                self.expect("{");
                let mut values = Vec::new();
                while self.peek() != Some("}") {
                    values.push(self.next());
                }
                self.expect("}");
                Ty::Enum(values)
            }
            _ => Ty::Named(t),
        }
    }
}

impl Schema {
    pub fn parse(text: &str) -> Schema {
        let mut p = Parser { tokens: tokenize(text), pos: 0 };
        let mut types = BTreeMap::new();
        while p.peek().is_some() {
            p.expect("type");
            let name = p.next();
            let ty = p.ty();
            assert!(types.insert(name.clone(), ty).is_none(), "type {name} defined twice");
        }
        Schema { types }
    }

    /// The schema of protocol version `v`, read from `schemas/v{v}.bare`.
    pub fn load(v: u16) -> Schema {
        let path = format!("{}/schemas/v{v}.bare", env!("CARGO_MANIFEST_DIR"));
        Schema::parse(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    /// Every union: its name and its members in tag order.
    pub fn unions(&self) -> BTreeMap<String, Vec<String>> {
        self.types
            .iter()
            .filter_map(|(n, t)| match t {
                Ty::Union(m) => Some((n.clone(), m.clone())),
                _ => None,
            })
            .collect()
    }

    /// Walks one complete message of type `top`, returning every
    /// (union, member) pair a tag selected, or where the bytes break the schema.
    pub fn walk_message(&self, top: &str, bytes: &[u8]) -> Result<BTreeSet<(String, String)>, String> {
        let mut w = Walker { schema: self, bytes, pos: 0, seen: BTreeSet::new() };
        w.walk(&Ty::Named(top.to_string()))?;
        if w.pos != bytes.len() {
            return Err(format!("{} trailing byte(s) after {top}", bytes.len() - w.pos));
        }
        Ok(w.seen)
    }
}

struct Walker<'a> {
    schema: &'a Schema,
    bytes: &'a [u8],
    pos: usize,
    seen: BTreeSet<(String, String)>,
}

impl Walker<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.bytes.len() - self.pos < n {
            return Err(format!("ends early at byte {}", self.pos));
        }
        self.pos += n;
        Ok(&self.bytes[self.pos - n..self.pos])
    }
    fn uint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("uint too long".into())
    }
    fn walk(&mut self, ty: &Ty) -> Result<(), String> {
        match ty {
            Ty::Fixed(n) => self.take(*n).map(drop),
            Ty::Bool => match self.take(1)?[0] {
                0 | 1 => Ok(()),
                b => Err(format!("bool {b}")),
            },
            Ty::Varint => self.uint().map(drop),
            Ty::Str => {
                let n = self.uint()? as usize;
                std::str::from_utf8(self.take(n)?).map(drop).map_err(|e| e.to_string())
            }
            Ty::Data => {
                let n = self.uint()? as usize;
                self.take(n).map(drop)
            }
            Ty::Void => Ok(()),
            Ty::List(t) => {
                for _ in 0..self.uint()? {
                    self.walk(t)?;
                }
                Ok(())
            }
            Ty::Optional(t) => match self.take(1)?[0] {
                0 => Ok(()),
                1 => self.walk(t),
                b => Err(format!("optional tag {b}")),
            },
            Ty::Map(k, v) => {
                for _ in 0..self.uint()? {
                    self.walk(k)?;
                    self.walk(v)?;
                }
                Ok(())
            }
            Ty::Struct(fields) => {
                for (_, t) in fields {
                    self.walk(t)?;
                }
                Ok(())
            }
            Ty::Enum(values) => {
                let v = self.uint()?;
                if v as usize >= values.len() {
                    return Err(format!("enum value {v}"));
                }
                Ok(())
            }
            Ty::Union(_) => Err("anonymous union".into()),
            Ty::Named(name) => {
                let def = self.schema.types.get(name).ok_or_else(|| format!("unknown type {name}"))?.clone();
                match &def {
                    Ty::Union(members) => {
                        let tag = self.uint()?;
                        let member =
                            members.get(tag as usize).ok_or_else(|| format!("unknown tag {tag} for {name}"))?.clone();
                        self.seen.insert((name.clone(), member.clone()));
                        self.walk(&Ty::Named(member))
                    }
                    other => self.walk(other),
                }
            }
        }
    }
}
