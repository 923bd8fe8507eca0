raise "the config.ru is on fire"
run ->(env) { [200, {}, ["never"]] }
