# A WebSocket app with faye-websocket (Debian's ruby-faye-websocket, on EventMachine),
# which takes the connection with rack.hijack.
require "faye/websocket"

App = lambda do |env|
  if Faye::WebSocket.websocket?(env)
    ws = Faye::WebSocket.new(env)
    ws.on(:open) { |_event| ws.send(Process.pid.to_s) }
    ws.on(:message) { |event| ws.send(event.data) }
    ws.on(:close) { |event| puts "faye closed #{event.code}" }
    ws.rack_response
  else
    [200, { "content-type" => "text/plain" }, ["plain #{Process.pid}"]]
  end
end

run App
