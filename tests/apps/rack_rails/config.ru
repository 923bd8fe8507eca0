# A Rails application in one file (Debian's ruby-rails, 6.1): only Action Controller.
require "action_controller/railtie"

class FerrymanRails < Rails::Application
  config.root = __dir__
  config.eager_load = false
  config.logger = Logger.new($stdout) # to the server's log, through the app's output
  config.secret_key_base = "not-secret-only-a-test-fixture-#{'x' * 32}"
  config.hosts.clear # any Host: the tests use 127.0.0.1:<port>
  routes.append do
    get "/" => "hello#index"
    post "/echo" => "hello#echo"
    get "/stream" => "hello#stream"
  end
end

class HelloController < ActionController::Base
  include ActionController::Live

  def index
    render plain: "Hello from Rails #{Rails.version} in #{Rails.env}, process #{Process.pid}"
  end

  def echo
    render json: { name: params[:name], bytes: request.body.read.bytesize }
  end

  # ActionController::Live: each part goes out as it is written. Last-Modified keeps
  # Rack::ETag (Rails' default middleware) from buffering the body to hash it.
  def stream
    response.headers["Content-Type"] = "text/plain"
    response.headers["Last-Modified"] = Time.now.httpdate
    3.times do |i|
      sleep(0.3) if i.positive?
      response.stream.write("part #{i}\n")
    end
  ensure
    response.stream.close
  end
end

FerrymanRails.initialize!
run FerrymanRails
