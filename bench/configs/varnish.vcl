# Varnish as the benchmark runs it: the built-in VCL decides (it stores
# what the origin's Cache-Control allows and collapses concurrent misses);
# this file only names the origin. The command line is in
# bench/src/server.rs: one thread pool, 256 MiB malloc storage, no grace or
# keep (stavka's default stale windows are zero), no jail, foreground.
vcl 4.1;

backend origin {
    .host = "{{origin_host}}";
    .port = "{{origin_port}}";
}
