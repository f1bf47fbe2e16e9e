//! Reading an internally tagged enum (`{"type": "complete", ...}`) in one pass when its tag comes
//! first, as in every frame Agora writes.
//!
//! serde's derived reader for `#[serde(tag = "type")]` cannot know where the tag is, so it first
//! copies the whole object into an untyped buffer and then reads the variant from that copy: a
//! task offer was read in 3.1 µs where the task inside it alone took 1.3. Here the tag is read
//! first and the rest of the object goes straight into the variant's fields, through a twin of
//! the enum derived as externally tagged (`#[serde(remote)]`), written by [`tag_first_enum!`]
//! from the one definition so that the two cannot drift apart. An object whose tag is not first
//! (a hand-written client may put it anywhere) is refused here, and the caller reads it the
//! derived way.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{forward_to_deserialize_any, Deserialize, Deserializer};

/// Defines an enum with the attributes given (`tag = "type"` among them) and a private twin of
/// it: the same variants, derived as `remote` with the twin's own attributes (externally
/// tagged), and the [`Twin`] impl that reads through it.
macro_rules! tag_first_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($body:tt)*
        }
        twin $twin:ident = $remote:literal $(, #[$twin_meta:meta])*
    ) => {
        $(#[$meta])*
        pub enum $name {
            $($body)*
        }

        #[derive(serde::Deserialize)]
        #[serde(remote = $remote)]
        $(#[$twin_meta])*
        #[allow(dead_code)]
        enum $twin {
            $($body)*
        }

        impl<'de> $crate::tag_first::Twin<'de> for $name {
            fn read_variant<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $twin::deserialize(d)
            }
        }
    };
}
pub(crate) use tag_first_enum;

/// An enum read from its tag and then its fields (see [`tag_first_enum!`]).
pub trait Twin<'de>: Sized {
    /// Reads the value from an externally tagged form: [`Variant`] gives the tag, then the
    /// fields.
    fn read_variant<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

/// The keys that may come before the variant's fields.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Head {
    Ref,
    Type,
    #[serde(other)]
    Other,
}

/// Reads an object whose first keys are `ref` (optional, and only when `with_ref`) and then
/// `type`, the rest being the variant's fields: the `ref` and the value. Anything else is an
/// error, and the caller then reads the text the derived way.
fn read<'de, T: Twin<'de>, D: Deserializer<'de>>(
    d: D,
    with_ref: bool,
) -> Result<(Option<String>, T), D::Error> {
    d.deserialize_map(Object {
        with_ref,
        _out: PhantomData,
    })
}

/// [`read`] of a whole JSON text: the object and nothing after it.
pub(crate) fn read_str<'de, T: Twin<'de>>(
    text: &'de str,
    with_ref: bool,
) -> serde_json::Result<(Option<String>, T)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let read = read(&mut de, with_ref)?;
    de.end()?;
    Ok(read)
}

struct Object<T> {
    with_ref: bool,
    _out: PhantomData<T>,
}

impl<'de, T: Twin<'de>> Visitor<'de> for Object<T> {
    type Value = (Option<String>, T);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object whose `type` comes first")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut reference = None;
        let mut head = map.next_key::<Head>()?;
        if self.with_ref && matches!(head, Some(Head::Ref)) {
            reference = map.next_value::<Option<String>>()?;
            head = map.next_key::<Head>()?;
        }
        if !matches!(head, Some(Head::Type)) {
            return Err(de::Error::custom("`type` is not the first field"));
        }
        let tag: String = map.next_value()?;
        let value = T::read_variant(Variant { tag: &tag, map })?;
        Ok((reference, value))
    }
}

/// The tag and the object's remaining fields, given to the twin as an externally tagged enum
/// whose variant is a struct.
pub struct Variant<'a, A> {
    tag: &'a str,
    map: A,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for Variant<'_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("expected an enum"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> de::EnumAccess<'de> for Variant<'_, A> {
    type Error = A::Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), A::Error> {
        let tag: StrDeserializer<'_, A::Error> = self.tag.into_deserializer();
        Ok((seed.deserialize(tag)?, self))
    }
}

impl<'de, A: MapAccess<'de>> de::VariantAccess<'de> for Variant<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        Err(de::Error::custom("unit variants are not read here"))
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, _seed: S) -> Result<S::Value, A::Error> {
        Err(de::Error::custom("newtype variants are not read here"))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("tuple variants are not read here"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.map)
    }
}
