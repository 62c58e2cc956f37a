//! The built-in configuration used when Ringway starts without `--config`: a welcome page on
//! 127.0.0.1:8080, like nginx's default site.

pub const DEFAULT_CONFIG: &str = r#"
[runtime]
workers = 1

[[listener]]
name = "default"
bind = "127.0.0.1:8080"

[[route]]
name = "welcome"
respond = { status = 200, headers = { "content-type" = "text/html; charset=utf-8" }, body = """
<!DOCTYPE html>
<html>
<head><title>Welcome to Ringway!</title></head>
<body>
<h1>Welcome to Ringway!</h1>
<p>If you see this page, the Ringway proxy is installed and working.
It is serving its built-in configuration.</p>
<p>To proxy to your services, write a config file (see <code>config/ringway.toml</code>)
and start <code>ringway --config FILE</code>; check one with <code>ringway check FILE</code>.</p>
</body>
</html>
""" }
"#;
