//! `ResponsesToChat` on arbitrary upstream SSE (the input bytes, decoded as the proxy decodes them): any
//! event sequence, with and without `include_usage`, never panics and always yields a valid
//! `chat.completion.chunk` stream (see `droid2api_fuzz::check_chat_stream`).
#![no_main]

use droid2api::translate::responses_chat::ResponsesToChat;
use droid2api_fuzz::{check_chat_stream, chunks, decode_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let events = decode_all(data);
    for include_usage in [false, true] {
        let mut t = ResponsesToChat::new(chunks(include_usage));
        let mut out = String::new();
        for ev in &events {
            t.on_event(ev, &mut out);
        }
        t.finish(&mut out);
        assert!(t.is_closed());
        check_chat_stream(&out, t.failure().is_some());
    }
});
