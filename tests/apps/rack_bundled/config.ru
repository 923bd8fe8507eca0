# Loaded through bundler/setup (there is a Gemfile): only the bundle's gems can be required.
sinatra = begin
  require "sinatra/base"
  "loaded"
rescue LoadError
  "not in the bundle"
end
loaded = $LOADED_FEATURES.any? { |path| path.end_with?("/bundler/setup.rb") } ? "loaded" : "not loaded"
text = "bundler #{loaded}, gemfile #{ENV['BUNDLE_GEMFILE']}, sinatra: #{sinatra}"
run ->(_env) { [200, { "content-type" => "text/plain" }, [text]] }
