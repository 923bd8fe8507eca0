# Ferryman's Rack loader: runs inside an app process, under the app's own ruby.
#
# It loads the app's config.ru with Rack::Builder (through bundler/setup when the app has
# a Gemfile), reports its journey and ready (or the error) on the handshake fd, then
# serves requests from the core over the session protocol (docs/session-protocol.md)
# with --thread-count threads. stdin is the owner pipe: at EOF (or SIGTERM) the loader
# stops accepting, lets requests in flight finish, and exits; if Ferryman itself is
# gone it exits at once. Ruby >= 3.0, and only the rack gem the app already has.

require "json"
require "socket"
require "stringio"
require "tempfile"
require "uri" # Rack::Lint (and many apps) take it as loaded, as other servers load it

module FerrymanRack
  # The handshake's version (keep in step with ferryman/spawning/kinds.py).
  HANDSHAKE_VERSION = 1
  PROTOCOL = "session"
  REQUEST_HEAD_SIZE = 12 # u32 environ length, u64 body length (big-endian)
  MAX_FRAME = 1 << 20
  # Bodies larger than this go to a temp file (rack.input), not memory.
  MEMORY_BODY = 1 << 20
  HOP_BY_HOP = %w[connection keep-alive proxy-authenticate proxy-authorization te
                  trailer trailers transfer-encoding upgrade].freeze
  REASONS = {
    200 => "OK", 201 => "Created", 202 => "Accepted", 204 => "No Content",
    206 => "Partial Content", 301 => "Moved Permanently", 302 => "Found",
    303 => "See Other", 304 => "Not Modified", 307 => "Temporary Redirect",
    308 => "Permanent Redirect", 400 => "Bad Request", 401 => "Unauthorized",
    403 => "Forbidden", 404 => "Not Found", 405 => "Method Not Allowed",
    409 => "Conflict", 413 => "Content Too Large", 422 => "Unprocessable Content",
    429 => "Too Many Requests", 500 => "Internal Server Error", 502 => "Bad Gateway",
    503 => "Service Unavailable"
  }.freeze
  ERROR_500 = "500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n" \
              "Content-Length: 22\r\n"
  ERROR_500_BODY = "Internal Server Error\n"

  # Journey steps and the final ready/error message, as JSON lines to the core.
  class Handshake
    def initialize(fd)
      @io = fd ? IO.for_fd(fd, "w", autoclose: true) : nil
      @io&.sync = true
    end

    def send(message)
      @io&.write(JSON.generate(message) + "\n")
    end

    def step(name, state)
      send({ step: name, state: state, at: Time.now.to_f })
    end

    def close
      @io&.close
      @io = nil
    end
  end

  def self.frame(kind, payload)
    [kind, payload.bytesize].pack("aN") + payload
  end

  def self.body_frames(data)
    return [] if data.empty?
    return [frame("B", data)] if data.bytesize <= MAX_FRAME

    out = []
    offset = 0
    while offset < data.bytesize
      piece = data.byteslice(offset, MAX_FRAME)
      out << frame("B", piece)
      offset += piece.bytesize
    end
    out
  end

  END_FRAME = frame("E", "")

  # The app's backtrace, without the loader's own frames.
  def self.app_backtrace(error)
    (error.backtrace || []).reject { |line| line.start_with?(__FILE__) }
  end

  # ---------------------------------------------------------------------------------------

  class Server
    attr_reader :stopping

    def initialize(app, listener, threads)
      @app = app
      @listener = listener
      @threads = threads
      @stopping = false
      @busy = Array.new(threads, false)
      @workers = []
    end

    def start
      @threads.times do |index|
        @workers << Thread.new { worker(index) }
      end
    end

    def worker(index)
      until @stopping
        begin
          conn = @listener.accept
        rescue IOError, SystemCallError
          return # the listener is closed: stopping
        end
        begin
          serve_connection(conn, index)
        rescue IOError, SystemCallError
          nil # the core closed the connection mid-request; it knows
        rescue Exception => e # rubocop:disable Lint/RescueException
          warn("Ferryman loader: #{e.class}: #{e.message}")
        ensure
          conn.close unless conn.closed?
        end
      end
    end

    def serve_connection(conn, index)
      until @stopping
        head = read_exactly(conn, REQUEST_HEAD_SIZE)
        return if head.nil?

        environ_length, body_length = head.unpack("NQ>")
        block = read_exactly(conn, environ_length)
        return if block.nil?

        @busy[index] = true
        begin
          input = read_body(conn, body_length)
          return if input.nil?

          handle(conn, block, input)
        ensure
          @busy[index] = false
        end
      end
    end

    def read_exactly(conn, size)
      return +"" if size.zero?

      data = conn.read(size)
      return nil if data.nil? || data.bytesize < size

      data
    end

    # rack.input: rewindable, as Rack 2 requires (a temp file for a large body).
    def read_body(conn, length)
      if length <= MEMORY_BODY
        data = read_exactly(conn, length)
        return nil if data.nil?

        return StringIO.new(data.force_encoding(Encoding::ASCII_8BIT))
      end
      file = Tempfile.new("ferryman-body")
      file.unlink # gone from the directory at once: only this process holds it
      file.binmode
      left = length
      while left.positive?
        chunk = conn.read([left, 1 << 16].min)
        if chunk.nil? || chunk.empty?
          file.close
          return nil
        end
        file.write(chunk)
        left -= chunk.bytesize
      end
      file.rewind
      file
    end

    def environ(block, input)
      pairs = block.force_encoding(Encoding::ASCII_8BIT).split("\0", -1)
      env = {}
      pairs.each_slice(2) { |key, value| env[key] = value || "" }
      scheme = env.delete("ferryman.url_scheme") || "http"
      uri = env["REQUEST_URI"] || "/"
      # Rack apps expect PATH_INFO as sent (still percent-encoded), as Puma gives it.
      path = uri.split("?", 2)[0]
      script_name = env["SCRIPT_NAME"] || ""
      unless script_name.empty?
        # Mounted at a prefix: it goes to SCRIPT_NAME, and PATH_INFO is the raw rest. The
        # core routed the request here because the path's first segments, decoded one
        # at a time, are the prefix's (an encoded "/" is never a boundary): so the rest
        # is what follows that many raw segments, still encoded as sent.
        count = script_name.count("/")
        parts = path.split("/", count + 2)
        path = parts.length > count + 1 ? "/" + parts[count + 1] : ""
      end
      env["PATH_INFO"] = path
      env["SCRIPT_NAME"] = script_name
      env["QUERY_STRING"] ||= ""
      env["SERVER_SOFTWARE"] = "Ferryman"
      env["rack.version"] = Rack.const_defined?(:VERSION) ? Rack::VERSION : [1, 3]
      env["rack.url_scheme"] = scheme
      env["rack.input"] = input
      env["rack.errors"] = $stderr
      env["rack.multithread"] = @threads > 1
      env["rack.multiprocess"] = true
      env["rack.run_once"] = false
      env["rack.hijack?"] = false
      env
    end

    def handle(conn, block, input)
      env = environ(block, input)
      head_only = env["REQUEST_METHOD"] == "HEAD"
      head_sent = false
      body = nil
      begin
        status, headers, body = @app.call(env)
        head_sent = send_response(conn, status.to_i, headers, body, head_only)
      rescue IOError, SystemCallError
        raise
      rescue Exception => e # rubocop:disable Lint/RescueException
        warn("Error while serving a request:\n#{e.class}: #{e.message}\n" \
             "#{FerrymanRack.app_backtrace(e).map { |l| "  #{l}" }.join("\n")}")
        $stderr.flush
        if head_sent
          conn.write(FerrymanRack.frame("A", "the app raised mid-response"))
        else
          out = [FerrymanRack.frame("H", ERROR_500)]
          out.concat(FerrymanRack.body_frames(ERROR_500_BODY)) unless head_only
          out << END_FRAME
          conn.write(out.join)
        end
      ensure
        body.close if body.respond_to?(:close)
        input.close if input.respond_to?(:close)
      end
    end

    # Sends the head and the body; true once the head went out.
    def send_response(conn, status, headers, body, head_only)
      lines = +"#{status} #{REASONS.fetch(status, 'Unknown')}\r\n"
      seen_length = false
      headers.each do |name, value|
        name = name.to_s
        lower = name.downcase
        next if HOP_BY_HOP.include?(lower) || lower.start_with?("rack.")

        seen_length = true if lower == "content-length"
        values = value.is_a?(Array) ? value : value.to_s.split("\n")
        values.each do |one|
          raise ArgumentError, "header #{name} has a line break" if one.to_s.match?(/[\r\n]/)

          lines << "#{name}: #{one}\r\n"
        end
      end
      if body.respond_to?(:to_ary)
        # The whole body is known: one write, with its length.
        data = body.to_ary.join.b
        if !seen_length && status >= 200 && ![204, 304].include?(status)
          lines << "Content-Length: #{data.bytesize}\r\n"
        end
        out = [FerrymanRack.frame("H", lines.b)]
        out.concat(FerrymanRack.body_frames(data)) unless head_only
        out << END_FRAME
        conn.write(out.join)
        return true
      end
      conn.write(FerrymanRack.frame("H", lines.b))
      if head_only
        conn.write(END_FRAME)
        return true
      end
      if body.respond_to?(:each)
        body.each do |chunk|
          chunk = chunk.to_s.b
          FerrymanRack.body_frames(chunk).each { |f| conn.write(f) } unless chunk.empty?
        end
      elsif body.respond_to?(:call)
        body.call(Stream.new(conn)) # Rack 3 streaming body
      end
      conn.write(END_FRAME)
      true
    end

    def stop(core_alive)
      @stopping = true
      begin
        @listener.shutdown(Socket::SHUT_RDWR)
      rescue StandardError
        nil
      end
      @listener.close unless @listener.closed?
      sleep(0.02) while @busy.any? && core_alive.call
    end
  end

  # What a Rack 3 streaming body writes to.
  class Stream
    def initialize(conn)
      @conn = conn
    end

    def write(data)
      data = data.to_s.b
      FerrymanRack.body_frames(data).each { |f| @conn.write(f) } unless data.empty?
      data.bytesize
    end
    alias << write

    def flush; end

    def close; end

    def close_write; end

    def closed?
      false
    end
  end

  # ---------------------------------------------------------------------------------------

  def self.load_app(handshake, app_root, startup_file)
    handshake.step("load_app", "in_progress")
    path = File.expand_path(startup_file, app_root)
    unless File.file?(path)
      fail_load(handshake, "startup_file_missing", "startup file #{path} does not exist", nil)
    end
    begin
      require "bundler/setup" if File.file?(File.join(app_root, "Gemfile"))
      require "rack"
      built = Rack::Builder.parse_file(path)
      app = built.is_a?(Array) ? built[0] : built # Rack 2: [app, options]
      unless app.respond_to?(:call)
        fail_load(handshake, "app_not_callable", "#{startup_file} did not build a Rack app", nil)
      end
    rescue SyntaxError => e
      fail_load(handshake, "syntax_error", "#{e.class}: #{e.message}", e)
    rescue Exception => e # rubocop:disable Lint/RescueException
      fail_load(handshake, "import_error", "#{e.class}: #{e.message}", e)
    end
    handshake.step("load_app", "performed")
    app
  end

  def self.fail_load(handshake, kind, message, error)
    trace = error ? ([message] + app_backtrace(error).map { |l| "  #{l}" }).join("\n") : ""
    $stderr.write("#{trace}\n") unless trace.empty?
    $stderr.flush
    handshake.send({ error: { step: "load_app", kind: kind, message: message,
                              traceback: trace } })
    handshake.close
    exit!(1)
  end

  def self.main
    args = JSON.parse(ARGV[0])
    parent = Process.ppid
    handshake = Handshake.new(args["handshake_fd"])
    handshake.send({ step: "loader_start", state: "performed", at: Time.now.to_f,
                     interpreter: "Ruby #{RUBY_VERSION} (#{RbConfig.ruby})" })
    app_root = args["app_root"]
    Dir.chdir(app_root)
    $LOAD_PATH.unshift(app_root)
    Process.setproctitle("Ferryman Rack: #{app_root}")
    app = load_app(handshake, app_root, args["startup_file"])

    handshake.step("listen", "in_progress")
    listener = UNIXServer.new(args["socket"])
    handshake.step("listen", "performed")
    threads = args["threads"].to_i
    threads = 1 if threads < 1
    server = Server.new(app, listener, threads)
    server.start
    handshake.step("ready", "performed")
    handshake.send({ ready: { version: HANDSHAKE_VERSION, socket: args["socket"],
                              protocol: PROTOCOL, concurrency: threads, pid: Process.pid } })
    handshake.close

    stop = Queue.new
    Signal.trap("TERM") do
      if server.stopping
        Signal.trap("TERM", "DEFAULT")
        Process.kill("TERM", Process.pid)
      else
        $stderr.write("Ferryman loader: received SIGTERM; finishing the requests in flight\n")
        stop << :term
      end
    end
    # Before killing a hung process (--max-request-time) the core sends SIGQUIT: every
    # thread's backtrace goes to the log.
    Signal.trap("QUIT") do
      Thread.new do
        lines = ["Ferryman loader: asked what this process is doing (max_request_time):"]
        Thread.list.each do |thread|
          lines << "Thread #{thread.object_id} (#{thread.status}):"
          (thread.backtrace || []).each { |line| lines << "  #{line}" }
        end
        $stderr.write(lines.join("\n") + "\n")
        $stderr.flush
      end
    end
    Thread.new do
      begin
        loop { $stdin.readpartial(4096) } # bytes we do not know are ignored
      rescue EOFError, IOError, SystemCallError
        stop << :eof
      end
    end
    stop.pop
    server.stop(-> { Process.ppid == parent })
    $stdout.flush
    $stderr.flush
    exit!(0)
  end
end

FerrymanRack.main if $PROGRAM_NAME == __FILE__
