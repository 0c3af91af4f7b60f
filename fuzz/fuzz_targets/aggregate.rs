//! `translate::aggregate` on arbitrary upstream bytes, for both formats: never panics, a
//! two-piece split (at a position taken from the input) assembles exactly what one piece does,
//! a reply is a JSON object (Anthropic: in the non-streaming key order), and a failure carries
//! an error status.
#![no_main]

use droid2api::translate::aggregate::{Aggregated, Assembler, StreamFormat};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 1 << 20;

fn assemble(format: StreamFormat, pieces: &[&[u8]]) -> String {
    let mut asm = Assembler::new(format, CAP);
    for p in pieces {
        if let Err(e) = asm.feed(p) {
            return format!("{e:?}");
        }
    }
    match asm.finish() {
        Ok(Aggregated::Reply(v)) => {
            let obj = v.as_object().expect("a reply is an object");
            if format == StreamFormat::Anthropic {
                let keys: Vec<&str> = obj.keys().take(8).map(String::as_str).collect();
                assert_eq!(
                    keys,
                    ["id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"]
                );
            }
            serde_json::to_string(&v).expect("serializable")
        }
        Ok(Aggregated::Failed { failure, .. }) => {
            assert!((400..600).contains(&failure.status));
            format!("failed {} {:?}", failure.status, failure.body)
        }
        Err(e) => format!("{e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (a, b) = data.split_at(cut);
    for format in [StreamFormat::Anthropic, StreamFormat::Responses] {
        assert_eq!(assemble(format, &[data]), assemble(format, &[a, b]));
    }
});
