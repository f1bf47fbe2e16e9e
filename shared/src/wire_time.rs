//! Timestamps on the wire (`#[serde(with = "crate::wire_time")]`, and [`option`] for an
//! `Option`): the same RFC 3339 text as chrono's own serde (`2026-12-07T10:30:19.123Z`: UTC,
//! `Z`, a fraction of 0, 3, 6 or 9 digits as the value needs), written and read without
//! chrono's formatting and parsing machinery. A task frame carries up to eight of them each
//! way, and chrono's writer (through `fmt`, a character at a time) and its relaxed parser were
//! a tenth of what a WebSocket agent and the server spent on a frame. Anything else (a year
//! outside 0-9999, a leap second, an offset other than `Z`) goes through chrono as before.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike, Utc};
use serde::{de, Deserializer, Serializer};

/// Longest text written here: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MOST: usize = 30;

/// Text written into a fixed buffer.
struct Text {
    out: [u8; MOST],
    len: usize,
}

impl Text {
    fn digits(&mut self, value: u32, width: usize) {
        let mut v = value;
        for i in (0..width).rev() {
            self.out[self.len + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += width;
    }

    fn byte(&mut self, b: u8) {
        self.out[self.len] = b;
        self.len += 1;
    }
}

/// The text chrono's serde writes for `t`, or `None` where chrono's own writer must.
fn write(t: &DateTime<Utc>) -> Option<Text> {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut text = Text {
        out: [0; MOST],
        len: 0,
    };
    text.digits(year as u32, 4);
    text.byte(b'-');
    text.digits(t.month(), 2);
    text.byte(b'-');
    text.digits(t.day(), 2);
    text.byte(b'T');
    text.digits(t.hour(), 2);
    text.byte(b':');
    text.digits(t.minute(), 2);
    text.byte(b':');
    text.digits(t.second(), 2);
    match nanos {
        0 => {}
        _ if nanos.is_multiple_of(1_000_000) => {
            text.byte(b'.');
            text.digits(nanos / 1_000_000, 3);
        }
        _ if nanos.is_multiple_of(1_000) => {
            text.byte(b'.');
            text.digits(nanos / 1_000, 6);
        }
        _ => {
            text.byte(b'.');
            text.digits(nanos, 9);
        }
    }
    text.byte(b'Z');
    Some(text)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` read directly, or `None` for chrono's parser.
fn read(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > MOST || b[b.len() - 1] != b'Z' {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<u32> {
        b.get(from..from + len)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let nanos = match b.len() {
        20 => 0,
        len if b[19] == b'.' && len > 21 => {
            let digits = len - 21;
            num(20, digits)? * 10u32.pow(9 - digits as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 2)?, num(8, 2)?)?;
    let time = date.and_hms_nano_opt(num(11, 2)?, num(14, 2)?, num(17, 2)?, nanos)?;
    Some(time.and_utc())
}

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    match write(t) {
        // Only ASCII digits and separators were written.
        Some(text) => {
            serializer.serialize_str(std::str::from_utf8(&text.out[..text.len]).unwrap_or_default())
        }
        None => serde::Serialize::serialize(t, serializer),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(Visit)
}

struct Visit;

impl de::Visitor<'_> for Visit {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an RFC 3339 date and time")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<DateTime<Utc>, E> {
        match read(s) {
            Some(t) => Ok(t),
            // What chrono's own serde reads.
            None => s
                .parse::<DateTime<FixedOffset>>()
                .map(|t| t.with_timezone(&Utc))
                .map_err(E::custom),
        }
    }
}

/// The same for an `Option` (`null` when absent).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        deserializer.deserialize_option(Maybe)
    }

    struct Maybe;

    impl<'de> de::Visitor<'de> for Maybe {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 date and time or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Fast {
        #[serde(with = "super")]
        t: DateTime<Utc>,
        #[serde(with = "super::option")]
        o: Option<DateTime<Utc>>,
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Chrono {
        t: DateTime<Utc>,
        o: Option<DateTime<Utc>>,
    }

    fn samples() -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let base = Utc.with_ymd_and_hms(2026, 12, 7, 10, 30, 19).unwrap();
        for nanos in [
            0,
            1,
            123_000_000,
            100_000_000,
            123_456_000,
            123_456_789,
            999_999_999,
            5_000,
        ] {
            out.push(base + chrono::Duration::nanoseconds(nanos));
        }
        for (y, m, d) in [(1970, 1, 1), (0, 1, 1), (9999, 12, 31), (2024, 2, 29)] {
            out.push(Utc.with_ymd_and_hms(y, m, d, 23, 59, 59).unwrap());
        }
        // Outside what is written here: chrono's own text.
        out.push(Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap());
        out.push(Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap());
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let ms = (seed % 4_102_444_800_000) as i64;
            let t = Utc.timestamp_millis_opt(ms).unwrap();
            out.push(t);
            out.push(t + chrono::Duration::nanoseconds((seed % 1_000_000) as i64));
        }
        out
    }

    #[test]
    fn writes_what_chrono_writes_and_reads_it_back() {
        for t in samples() {
            for o in [None, Some(t)] {
                let fast = serde_json::to_string(&Fast { t, o }).unwrap();
                let chrono = serde_json::to_string(&Chrono { t, o }).unwrap();
                assert_eq!(fast, chrono, "{t:?}");
                assert_eq!(serde_json::from_str::<Fast>(&fast).unwrap(), Fast { t, o });
            }
        }
    }

    #[test]
    fn reads_what_chrono_reads() {
        for text in [
            "2026-12-07T10:30:19Z",
            "2026-12-07T10:30:19.1Z",
            "2026-12-07T10:30:19.123456789Z",
            "2026-12-07T10:30:19+02:00",
            "2026-12-07t10:30:19z",
            "2026-12-07 10:30:19.5Z",
            "2016-12-31T23:59:60Z",
            "2026-12-07T10:30:19.1234567891Z",
        ] {
            let json = format!(r#"{{"t":"{text}","o":"{text}"}}"#);
            let fast = serde_json::from_str::<Fast>(&json).map_err(|e| e.to_string());
            let chrono = serde_json::from_str::<Chrono>(&json).map_err(|e| e.to_string());
            match (fast, chrono) {
                (Ok(f), Ok(c)) => assert_eq!((f.t, f.o), (c.t, c.o), "{text}"),
                (Err(_), Err(_)) => {}
                (f, c) => panic!("{text}: {f:?} against chrono's {c:?}"),
            }
        }
        for bad in [
            "2026-13-07T10:30:19Z",
            "2026-02-30T10:30:19Z",
            "2026-12-07T24:30:19Z",
            "2026-12-07T10:30:19.Z",
            "2026-12-07T10:30:1xZ",
            "",
            "yesterday",
        ] {
            let json = format!(r#"{{"t":"{bad}","o":null}}"#);
            assert!(serde_json::from_str::<Fast>(&json).is_err(), "{bad}");
            assert!(serde_json::from_str::<Chrono>(&json).is_err(), "{bad}");
        }
        let none: Fast = serde_json::from_str(r#"{"t":"2026-12-07T10:30:19Z","o":null}"#).unwrap();
        assert_eq!(none.o, None);
    }
}
