# A Rack stub app for the end-to-end tests (plain Rack, wrapped in Rack::Lint).
require "digest"

class Stub
  def call(env)
    request = Rack::Request.new(env)
    case request.path_info
    when "/"
      [200, { "content-type" => "text/plain" }, ["Hello from Rack #{Process.pid}\n"]]
    when "/pid"
      [200, { "content-type" => "text/plain" }, [Process.pid.to_s]]
    when "/echo"
      body = env["rack.input"].read
      [200, { "content-type" => "application/octet-stream" }, [body]]
    when "/digest"
      data = env["rack.input"].read
      [200, { "content-type" => "text/plain" }, ["#{data.bytesize} #{Digest::SHA256.hexdigest(data)}"]]
    when "/form"
      [200, { "content-type" => "text/plain" }, ["#{request.params['name']}:#{request.params['count']}"]]
    when "/stream"
      body = Enumerator.new { |y| 3.times { |i| y << "chunk #{i}\n" } }
      [200, { "content-type" => "text/plain" }, body]
    when "/slow"
      sleep((request.params["t"] || "1").to_f)
      [200, { "content-type" => "text/plain" }, [Process.pid.to_s]]
    when "/env"
      keys = %w[REQUEST_METHOD SCRIPT_NAME PATH_INFO QUERY_STRING SERVER_NAME SERVER_PORT HTTP_HOST rack.url_scheme]
      [200, { "content-type" => "text/plain" }, [keys.map { |k| "#{k}=#{env[k]}" }.join("\n")]]
    when "/raise"
      raise "the handler blew up"
    else
      [404, { "content-type" => "text/plain" }, ["not found\n"]]
    end
  end
end

use Rack::Lint
run Stub.new
