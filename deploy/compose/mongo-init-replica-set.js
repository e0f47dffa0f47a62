// Run once by the `mongo-init` service in docker-compose.yml (mongosh --file).
// Idempotent: initiates the one-member replica set rs0 on a fresh volume and
// does nothing on later starts; then waits until the member is PRIMARY, so the
// services, which start after this container exits 0, can write at once; then
// creates (or updates) one user per service, whose only role is readWrite on
// that service's own database.
const config = { _id: "rs0", members: [{ _id: 0, host: "mongo:27017" }] };

try {
  rs.status();
  print("replica set rs0 already initiated");
} catch (e) {
  if (e.codeName !== "NotYetInitialized") {
    throw e;
  }
  rs.initiate(config);
  print("replica set rs0 initiated");
}

const deadline = Date.now() + 60 * 1000;
while (!db.hello().isWritablePrimary) {
  if (Date.now() > deadline) {
    throw new Error("rs0 has no primary after 60 s");
  }
  sleep(500);
}
print("rs0 primary: " + db.hello().primary);

// One database and one user per service; the password comes from the environment
// (OMNIROUTE_<SERVICE>_MONGO_PASSWORD), the same the service's URI carries.
const admin = db.getSiblingDB("admin");
for (const service of ["ingest", "router", "sla", "notify"]) {
  const user = "omniroute-" + service;
  const password = process.env["OMNIROUTE_" + service.toUpperCase() + "_MONGO_PASSWORD"];
  if (!password) {
    throw new Error("no password for " + user);
  }
  const roles = [{ role: "readWrite", db: "omniroute_" + service }];
  if (admin.getUser(user) === null) {
    admin.createUser({ user: user, pwd: password, roles: roles });
    print("user " + user + " created");
  } else {
    admin.updateUser(user, { pwd: password, roles: roles });
    print("user " + user + " updated");
  }
}
