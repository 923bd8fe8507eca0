# An app with a TERM handler of its own: the loader leaves it in place.
Signal.trap("TERM") do
  $stdout.write("app: own TERM handler ran\n")
  exit!(0)
end

run ->(_env) { [200, { "content-type" => "text/plain" }, [Process.pid.to_s]] }
