require "a_gem_that_is_not_installed"
run ->(env) { [200, {}, ["never"]] }
