#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    image_replication_operator::fuzzing::run("ec2_xml", data);
});
