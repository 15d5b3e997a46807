#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    image_replication_operator::fuzzing::run("notification_envelope", data);
});
