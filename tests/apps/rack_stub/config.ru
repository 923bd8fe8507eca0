# A Rack stub app for the end-to-end tests: plain Rack, wrapped in Rack::Lint, and at
# /rack3 the Rack 3 shapes that Rack::Lint 2.2 does not know (streaming bodies...).
require "digest"
require "json"

# A WebSocket echo over a hijacked IO, as WebSocket libraries do it (RFC 6455, enough
# for the tests): the first message is the process's PID, then every message comes
# back; a close frame is answered and ends it.
module WebSocketEcho
  GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

  def self.accept(key)
    [Digest::SHA1.digest("#{key}#{GUID}")].pack("m0")
  end

  def self.frame(opcode, payload)
    size = payload.bytesize
    length = if size < 126 then [size].pack("C")
             elsif size < 65_536 then [126, size].pack("Cn")
             else [127, size].pack("CQ>")
             end
    [0x80 | opcode].pack("C") + length + payload.b
  end

  def self.serve(io)
    io.write(frame(1, Process.pid.to_s))
    loop do
      head = io.read(2)
      break if head.nil? || head.bytesize < 2

      first, second = head.unpack("CC")
      size = second & 0x7f
      size = io.read(2).unpack1("n") if size == 126
      size = io.read(8).unpack1("Q>") if size == 127
      mask = (second & 0x80).zero? ? nil : io.read(4).bytes
      data = size.zero? ? +"" : io.read(size)
      data = data.bytes.each_with_index.map { |b, i| b ^ mask[i % 4] }.pack("C*") if mask
      io.write(frame(first & 0x0f, data))
      break if first & 0x0f == 8
    end
  rescue IOError, SystemCallError
    nil # the tunnel ended under us
  ensure
    io.close unless io.closed?
  end
end

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
    when "/reread"
      # rack.input is rewindable (Rack 2): read, rewind, read again.
      first = env["rack.input"].read
      env["rack.input"].rewind
      second = env["rack.input"].read
      [200, { "content-type" => "text/plain" }, ["#{first.bytesize} #{first == second}"]]
    when "/form"
      [200, { "content-type" => "text/plain" }, ["#{request.params['name']}:#{request.params['count']}"]]
    when "/stream"
      delay = (request.params["delay"] || "0").to_f
      body = Enumerator.new { |y| 3.times { |i| sleep(delay) if i.positive?; y << "chunk #{i}\n" } }
      [200, { "content-type" => "text/plain" }, body]
    when "/big"
      # n bytes, 64 KiB at a time (a client may leave halfway).
      left = request.params["n"].to_i
      body = Enumerator.new do |y|
        while left.positive?
          piece = [left, 65_536].min
          y << ("x" * piece)
          left -= piece
        end
      end
      [200, { "content-type" => "application/octet-stream" }, body]
    when "/slow"
      sleep((request.params["t"] || "1").to_f)
      [200, { "content-type" => "text/plain" }, [Process.pid.to_s]]
    when "/env"
      keys = %w[REQUEST_METHOD SCRIPT_NAME PATH_INFO QUERY_STRING SERVER_NAME SERVER_PORT HTTP_HOST rack.url_scheme
                rack.multithread rack.hijack?]
      [200, { "content-type" => "text/plain" }, [keys.map { |k| "#{k}=#{env[k]}" }.join("\n")]]
    when "/osenv"
      names = request.params["names"].to_s.split(",")
      [200, { "content-type" => "application/json" }, [JSON.generate(names.to_h { |n| [n, ENV[n]] })]]
    when "/print"
      puts "stub says: #{request.params['msg']}" # $stdout, as an app's logger writes
      [200, { "content-type" => "text/plain" }, ["printed"]]
    when "/raise"
      raise "the handler blew up"
    when "/ws/full"
      # Full hijack: the app writes the 101 itself, then hands the IO to a thread of its
      # own and returns at once (as faye-websocket does); the response is not used.
      io = env["rack.hijack"].call
      io.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
               "Sec-WebSocket-Accept: #{WebSocketEcho.accept(env['HTTP_SEC_WEBSOCKET_KEY'])}\r\n\r\n")
      Thread.new { WebSocketEcho.serve(io) }
      [200, {}, []]
    when "/ws/partial"
      # Partial hijack: the server sends the 101 head, the callable gets the IO.
      headers = { "upgrade" => "websocket", "connection" => "Upgrade",
                  "sec-websocket-accept" => WebSocketEcho.accept(env["HTTP_SEC_WEBSOCKET_KEY"]),
                  "rack.hijack" => ->(io) { WebSocketEcho.serve(io) } }
      [101, headers, []]
    when "/hijack/chunked"
      # A full hijack answering plain HTTP with a chunked body it encodes itself (as
      # message_bus's long polling does).
      io = env["rack.hijack"].call
      io.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
      3.times do |i|
        event = "event #{i}\n"
        io.write("#{event.bytesize.to_s(16)}\r\n#{event}\r\n")
      end
      io.write("0\r\n\r\n")
      io.close
      [200, {}, []]
    else
      [404, { "content-type" => "text/plain" }, ["not found\n"]]
    end
  end
end

# Rack 3 shapes, outside Rack::Lint 2.2 (which would refuse them).
class Rack3
  # Responds to each and to call: Rack 3 says it is enumerable.
  class Both
    def each
      yield "each\n"
    end

    def call(stream)
      stream.write("call\n")
      stream.close
    end
  end

  def call(env)
    case env["PATH_INFO"]
    when "/stream"
      # A streaming body: responds to call only, writes as it goes.
      delay = (env["QUERY_STRING"][/delay=([\d.]+)/, 1] || "0").to_f
      body = lambda do |stream|
        3.times { |i| sleep(delay) if i.positive?; stream << "part #{i}\n" }
        stream.close
      end
      [200, { "content-type" => "text/plain" }, body]
    when "/read"
      # A streaming body that reads the request body from the stream.
      body = lambda do |stream|
        data = stream.read
        stream.write("#{data.bytesize} #{Digest::SHA256.hexdigest(data)}")
        stream.close
      end
      [200, { "content-type" => "text/plain" }, body]
    when "/both"
      [200, { "content-type" => "text/plain" }, Both.new]
    when "/headers"
      # Lowercase names, several values as an array, a status the loader's own table
      # does not name.
      [410, { "content-type" => "text/plain", "set-cookie" => ["a=1", "b=2"], "x-rack" => "3" }, ["gone\n"]]
    when "/finished"
      env["rack.response_finished"] << lambda do |_env, status, _headers, error|
        puts "response finished: #{status} #{error.inspect}"
      end
      [200, { "content-type" => "text/plain" }, ["done\n"]]
    else
      [404, { "content-type" => "text/plain" }, ["not found\n"]]
    end
  end
end

map "/rack3" do
  run Rack3.new
end

map "/" do
  use Rack::Lint
  run Stub.new
end
