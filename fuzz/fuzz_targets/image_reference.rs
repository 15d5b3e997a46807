#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    image_replication_operator::fuzzing::run("image_reference", data);
});
